//! FindCoordinator: the broker that coordinates a group (the owner of its
//! `__consumer_offsets` partition), at its Kafka address.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::error::group_code_of;
use super::metadata::split_host_port;
use crate::error::BrokerError;
use crate::service::Shared;

/// Answers FindCoordinator (v0–3: one key; v4: a batch of keys).
pub async fn find_coordinator(
    shared: &Shared,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in req.coordinator_keys {
            r.coordinators.push(find(shared, key, req.key_type).await);
        }
    } else {
        let c = find(shared, req.key, req.key_type).await;
        r.error_code = c.error_code;
        r.error_message = c.error_message;
        r.node_id = c.node_id;
        r.host = c.host;
        r.port = c.port;
    }
    r
}

async fn find(shared: &Shared, key: StrBytes, key_type: i8) -> Coordinator {
    let mut c = Coordinator::default();
    c.node_id = BrokerId(-1);
    c.port = -1;
    let found = if key_type != 0 {
        Err((
            ResponseError::CoordinatorNotAvailable.code(),
            "transaction coordinators are not supported (no transactions in Strata yet)".into(),
        ))
    } else {
        locate(shared, key.as_str())
            .await
            .map_err(|e| (group_code_of(&e), e.to_string()))
    };
    match found {
        Ok((id, host, port)) => {
            c.node_id = BrokerId(id as i32);
            c.host = StrBytes::from_string(host);
            c.port = i32::from(port);
        }
        Err((code, message)) => {
            c.error_code = code;
            c.error_message = Some(StrBytes::from_string(message));
        }
    }
    c.key = key;
    c
}

/// The coordinator of `group` and its Kafka host and port.
async fn locate(shared: &Shared, group: &str) -> crate::error::Result<(u32, String, u16)> {
    let (owner, _, _) = shared.groups.find_coordinator(shared, group).await?;
    let address = if owner == shared.broker_id.0 {
        Some(shared.kafka_advertised_addr.clone())
    } else {
        shared.cluster.kafka_address_of(owner)
    };
    address
        .as_deref()
        .and_then(split_host_port)
        .map(|(host, port)| (owner, host.to_owned(), port))
        .ok_or_else(|| BrokerError::NotCoordinator {
            group: group.to_owned(),
            coordinator: None,
            detail: "its coordinator's Kafka address is not known yet; retry shortly".into(),
        })
}
