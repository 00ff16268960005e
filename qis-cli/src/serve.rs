//! `qis serve`: the HTTP gateway and dashboard in front of `--url`, until
//! Ctrl-C or SIGTERM; then a graceful shutdown (requests in flight finish,
//! consumer acks are flushed, the transport is closed).

use qis::Subject;
use qis_gateway::{GatewayConfig, Tokens};

use crate::cli::ServeArgs;
use crate::error::CliError;
use crate::input::connect;
use crate::show;
use crate::signals::Signals;

/// Run `qis serve`.
pub async fn run(url: &str, prefix: Option<&Subject>, args: ServeArgs) -> Result<(), CliError> {
    let config = config(&args)?;
    let transport = connect(url, prefix).await?;
    let mut signals = Signals::listen()?;
    let gateway = match qis_gateway::start(transport.clone(), config).await {
        Ok(g) => g,
        Err(e) => {
            let _ = transport.close().await;
            return Err(e.into());
        }
    };
    eprintln!(
        "qis: serving {} (prefix {}) at {} ; dashboard at {}/ ; API described at {}/openapi.json (Ctrl-C to stop)",
        show::redacted(url),
        transport.prefix(),
        gateway.url(),
        gateway.url(),
        gateway.url(),
    );
    gateway
        .run_until(async move {
            signals.next().await;
        })
        .await?;
    eprintln!("qis: gateway stopped");
    Ok(())
}

fn config(args: &ServeArgs) -> Result<GatewayConfig, CliError> {
    let mut tokens = Tokens::new(&args.tokens)?;
    if let Some(file) = &args.tokens_file {
        tokens = tokens.and(Tokens::from_file(file)?);
    }
    let mut config = GatewayConfig::default()
        .listen(args.listen)
        .tokens(tokens)
        .max_body(args.max_body)
        .max_batch(args.max_batch)
        .max_streams(args.max_streams)
        .max_wait(args.max_wait)
        .session_idle(args.session_idle);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config = config.tls(cert, key);
    }
    Ok(config)
}
