//! AlterUserScramCredentials v0 (KIP-554): SCRAM credentials set from the salted passwords
//! admin clients compute, and deleted; stored by the controller in the metadata log (so
//! every broker of a cluster authenticates with them). Checked as Kafka checks them: an
//! empty user name or iterations outside 4096..=16384 are UNACCEPTABLE_CREDENTIAL, an
//! unknown mechanism UNSUPPORTED_SASL_MECHANISM, a (user, mechanism) altered twice
//! DUPLICATE_RESOURCE, a deletion of a missing credential RESOURCE_NOT_FOUND; a user with
//! any error has none of its changes applied.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
};

use super::{controller_failure, str_bytes, NONE};
use crate::broker::Broker;
use crate::meta::controller::{ControllerRequest, ControllerResponse, ScramUpsert};
use crate::security::scram::{Credential, Mechanism};

type Failure = (ResponseError, String);

pub async fn handle(
    broker: &Broker,
    req: &AlterUserScramCredentialsRequest,
    caller: &super::Caller,
) -> AlterUserScramCredentialsResponse {
    if !caller.allowed_on_cluster(crate::security::acl::AclOperation::Alter) {
        let mut users: Vec<String> = req.deletions.iter().map(|d| d.name.to_string()).collect();
        users.extend(req.upsertions.iter().map(|u| u.name.to_string()));
        users.dedup();
        return AlterUserScramCredentialsResponse::default().with_results(
            users
                .into_iter()
                .map(|u| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(str_bytes(u))
                        .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                        .with_error_message(Some(str_bytes("Cluster authorization failed.")))
                })
                .collect(),
        );
    }
    // Per user: its first error, in request order of users.
    let mut order: Vec<String> = Vec::new();
    let mut errors: BTreeMap<String, Failure> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let note = |user: &str, order: &mut Vec<String>| {
        if !order.iter().any(|u| u == user) {
            order.push(user.to_string());
        }
    };
    let fail = |errors: &mut BTreeMap<String, Failure>, user: &str, e: Failure| {
        errors.entry(user.to_string()).or_insert(e);
    };
    let mut deletions = Vec::new();
    for d in &req.deletions {
        let user = d.name.to_string();
        note(&user, &mut order);
        if let Err(e) = check(&user, d.mechanism, None, &mut seen) {
            fail(&mut errors, &user, e);
            continue;
        }
        if let Some(m) = Mechanism::from_kafka_type(d.mechanism) {
            deletions.push((user, m.name().to_string()));
        }
    }
    let mut upserts = Vec::new();
    for u in &req.upsertions {
        let user = u.name.to_string();
        note(&user, &mut order);
        if let Err(e) = check(&user, u.mechanism, Some(u.iterations), &mut seen) {
            fail(&mut errors, &user, e);
            continue;
        }
        let Some(m) = Mechanism::from_kafka_type(u.mechanism) else {
            continue;
        };
        if u.salt.is_empty() || u.salted_password.is_empty() {
            fail(
                &mut errors,
                &user,
                (
                    ResponseError::UnacceptableCredential,
                    "Salt and salted password must not be empty".into(),
                ),
            );
            continue;
        }
        match Credential::from_salted_password(m, &u.salt, &u.salted_password, u.iterations) {
            Ok(c) => upserts.push(ScramUpsert {
                user,
                mechanism: m.name().to_string(),
                salt: c.salt,
                stored_key: c.stored_key,
                server_key: c.server_key,
                iterations: c.iterations,
            }),
            Err(e) => fail(
                &mut errors,
                &user,
                (ResponseError::UnacceptableCredential, e.to_string()),
            ),
        }
    }
    upserts.retain(|u| !errors.contains_key(&u.user));
    deletions.retain(|(u, _)| !errors.contains_key(u));
    if !upserts.is_empty() || !deletions.is_empty() {
        let answer = broker
            .meta
            .submit(ControllerRequest::AlterScramCredentials {
                upserts: upserts.clone(),
                deletions: deletions.clone(),
                only_if_absent: false,
            })
            .await;
        match answer {
            Ok(ControllerResponse::Credentials { results, .. }) => {
                for (user, missing) in results {
                    if let Some(message) = missing {
                        fail(
                            &mut errors,
                            &user,
                            (ResponseError::ResourceNotFound, message),
                        );
                    } else {
                        tracing::info!(user, "SCRAM credentials altered");
                    }
                }
            }
            Ok(other) => {
                let message = format!("unexpected controller answer {other:?}");
                for u in upserts
                    .iter()
                    .map(|u| &u.user)
                    .chain(deletions.iter().map(|d| &d.0))
                {
                    fail(
                        &mut errors,
                        u,
                        (ResponseError::UnknownServerError, message.clone()),
                    );
                }
            }
            Err(e) => {
                let failure = controller_failure(&e);
                for u in upserts
                    .iter()
                    .map(|u| &u.user)
                    .chain(deletions.iter().map(|d| &d.0))
                {
                    fail(&mut errors, u, failure.clone());
                }
            }
        }
    }
    let results = order
        .into_iter()
        .map(|user| {
            let r = AlterUserScramCredentialsResult::default().with_user(str_bytes(user.clone()));
            match errors.get(&user) {
                None => r.with_error_code(NONE),
                Some((code, message)) => r
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message.clone()))),
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// The checks of one deletion or upsertion (Kafka's order: name, mechanism, iterations,
/// then the (user, mechanism) pair altered twice).
fn check(
    user: &str,
    mechanism: i8,
    iterations: Option<i32>,
    seen: &mut BTreeSet<(String, i8)>,
) -> Result<(), Failure> {
    if user.is_empty() {
        return Err((
            ResponseError::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    if Mechanism::from_kafka_type(mechanism).is_none() {
        return Err((
            ResponseError::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism".into(),
        ));
    }
    if let Some(i) = iterations {
        if i < Mechanism::MIN_ITERATIONS {
            return Err((
                ResponseError::UnacceptableCredential,
                "Too few iterations".into(),
            ));
        }
        if i > Mechanism::MAX_ITERATIONS {
            return Err((
                ResponseError::UnacceptableCredential,
                "Too many iterations".into(),
            ));
        }
    }
    if !seen.insert((user.to_string(), mechanism)) {
        return Err((
            ResponseError::DuplicateResource,
            "A user credential cannot be altered twice in the same request".into(),
        ));
    }
    Ok(())
}
