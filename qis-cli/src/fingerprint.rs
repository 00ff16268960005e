//! `qis fingerprint`: the subjects and fingerprint of a context vector.

use qis::{Fingerprint, Subject};
use serde_json::json;

use crate::cli::FingerprintArgs;
use crate::error::CliError;
use crate::show;

/// Run `qis fingerprint`. Needs no transport.
pub fn run(prefix: Option<&Subject>, args: &FingerprintArgs) -> Result<(), CliError> {
    let prefix = prefix.cloned().unwrap_or_default();
    let subject = Subject::readable(&prefix, &args.domain, &args.problem_class)?;
    let canonical = Fingerprint::canonical(
        &args.domain,
        &args.problem_class,
        &args.context.0,
        args.resolution,
    )?;
    let fp = Fingerprint::compute(
        &args.domain,
        &args.problem_class,
        &args.context.0,
        args.resolution,
    )?;
    let fingerprinted = subject.child(fp.as_str())?;
    let buckets = canonical.rsplit('\n').next().unwrap_or_default();
    if args.json {
        show::json_line(&json!({
            "subject": subject.as_str(),
            "fingerprint": fp.as_str(),
            "fingerprinted_subject": fingerprinted.as_str(),
            "resolution": args.resolution,
            "buckets": buckets,
            "canonical_input": canonical,
        }))
    } else {
        show::line(&format!("subject                {subject}"))?;
        show::line(&format!("fingerprint            {fp}"))?;
        show::line(&format!("fingerprinted subject  {fingerprinted}"))?;
        show::line(&format!(
            "buckets                {buckets} (resolution {})",
            args.resolution
        ))
    }
}
