//! AlterClientQuotas v0-1 (key 49, KIP-546): client quotas (`producer_byte_rate`,
//! `consumer_byte_rate`, `request_percentage`, `controller_mutation_rate`, and an ip's
//! `connection_creation_rate`) set and removed by the active controller in the metadata log,
//! validated there as Kafka's `ClientQuotaControlManager` does (`meta::client_quotas`). One
//! answer per distinct entity; `validate_only` writes nothing. Needs ALTER_CONFIGS on the
//! cluster (CLUSTER_AUTHORIZATION_FAILED for every entity otherwise).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};

use super::{controller_failure, str_bytes, NONE};
use crate::broker::Broker;
use crate::meta::client_quotas::QuotaAlteration;
use crate::meta::controller::{ControllerRequest, ControllerResponse};
use crate::meta::records::{QuotaEntity, QuotaValue};
use crate::security::acl::AclOperation;

pub async fn handle(
    broker: &Broker,
    req: &AlterClientQuotasRequest,
    caller: &super::Caller,
) -> AlterClientQuotasResponse {
    let alterations: Vec<QuotaAlteration> = req
        .entries
        .iter()
        .map(|e| QuotaAlteration {
            entity: e
                .entity
                .iter()
                .map(|d| {
                    (
                        d.entity_type.to_string(),
                        d.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            ops: e
                .ops
                .iter()
                .map(|o| {
                    (
                        o.key.to_string(),
                        (!o.remove).then_some(QuotaValue(o.value)),
                    )
                })
                .collect(),
        })
        .collect();
    let entities: Vec<QuotaEntity> = alterations.iter().map(|a| a.entity.clone()).collect();
    let every = |code: i16, message: &str| {
        let entries = entities
            .iter()
            .map(|e| entry(e, code, Some(message)))
            .collect();
        AlterClientQuotasResponse::default().with_entries(entries)
    };
    if !caller.allowed_on_cluster(AclOperation::AlterConfigs) {
        return every(
            ResponseError::ClusterAuthorizationFailed.code(),
            "Cluster authorization failed.",
        );
    }
    if alterations.is_empty() {
        return AlterClientQuotasResponse::default();
    }
    let answer = broker
        .meta
        .submit(ControllerRequest::AlterClientQuotas {
            alterations,
            validate_only: req.validate_only,
        })
        .await;
    match answer {
        Ok(ControllerResponse::QuotasAltered { results }) => {
            for (entity, error) in &results {
                if error.is_none() && !req.validate_only {
                    tracing::info!(entity = ?entity, "client quotas altered");
                }
            }
            AlterClientQuotasResponse::default().with_entries(
                results
                    .iter()
                    .map(|(entity, error)| match error {
                        None => entry(entity, NONE, None),
                        Some((code, message)) => entry(entity, *code, Some(message)),
                    })
                    .collect(),
            )
        }
        Ok(other) => every(
            ResponseError::UnknownServerError.code(),
            &format!("unexpected controller answer {other:?}"),
        ),
        Err(e) => {
            let (code, message) = controller_failure(&e);
            every(code.code(), &message)
        }
    }
}

fn entry(entity: &QuotaEntity, code: i16, message: Option<&str>) -> EntryData {
    EntryData::default()
        .with_error_code(code)
        .with_error_message(message.map(str_bytes))
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(str_bytes(t.clone()))
                        .with_entity_name(n.clone().map(str_bytes))
                })
                .collect(),
        )
}
