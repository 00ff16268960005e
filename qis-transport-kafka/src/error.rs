//! librdkafka errors as QIS errors.

use qis_core::{Error, ErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::NAME;

/// The error kind a librdkafka error code means to a caller.
pub(crate) fn kind_of_code(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::BrokerNotAvailable
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NetworkException
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::CoordinatorLoadInProgress
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition => ErrorKind::Unavailable,
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => ErrorKind::Timeout,
        C::InvalidArgument | C::InvalidConfig | C::MessageSizeTooLarge | C::InvalidMessageSize => {
            ErrorKind::InvalidInput
        }
        C::BrokerDestroy | C::Fatal => ErrorKind::Closed,
        _ => ErrorKind::Backend,
    }
}

/// A qis error for a librdkafka error, with `what` saying what failed.
pub(crate) fn kafka_error(what: impl std::fmt::Display, err: KafkaError) -> Error {
    let kind = match &err {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) | KafkaError::Nul(_) => {
            ErrorKind::InvalidInput
        }
        KafkaError::Canceled => ErrorKind::Closed,
        KafkaError::AdminOp(code) => kind_of_code(*code),
        other => other
            .rdkafka_error_code()
            .map(kind_of_code)
            .unwrap_or(ErrorKind::Backend),
    };
    let hint = match kind {
        ErrorKind::Unavailable | ErrorKind::Timeout => {
            ": check that the Kafka brokers are running and reachable"
        }
        ErrorKind::InvalidInput => ": check the client options",
        _ => "",
    };
    Error::new(kind, NAME, format!("{what}: {err}{hint}")).with_source(err)
}

/// A qis error for a `spawn_blocking` task that did not finish.
pub(crate) fn join_error(what: &str, err: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Backend,
        NAME,
        format!("{what}: the worker task failed"),
    )
    .with_source(err)
}
