//! DescribeUserScramCredentials v0 (KIP-554): each user's SCRAM mechanisms and iteration
//! counts, from the metadata image (never salts or keys). No users named (null or empty):
//! every user with a credential. A named user without one gets RESOURCE_NOT_FOUND, a name
//! given twice DUPLICATE_RESOURCE, as in Kafka.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{str_bytes, NONE};
use crate::broker::Broker;
use crate::security::scram::Mechanism;

pub fn handle(
    broker: &Broker,
    req: &DescribeUserScramCredentialsRequest,
    caller: &super::Caller,
) -> DescribeUserScramCredentialsResponse {
    if !caller.allowed_on_cluster(crate::security::acl::AclOperation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
    }
    let image = broker.meta.image();
    let named: Vec<String> = req
        .users
        .iter()
        .flatten()
        .map(|u| u.name.to_string())
        .collect();
    let users: Vec<String> = if named.is_empty() {
        image.scram.keys().cloned().collect()
    } else {
        named.clone()
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &named {
        *counts.entry(u.as_str()).or_default() += 1;
    }
    let mut reported = std::collections::BTreeSet::new();
    let mut results = Vec::new();
    for user in &users {
        if !reported.insert(user.clone()) {
            continue;
        }
        let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
        if counts.get(user.as_str()).copied().unwrap_or(0) > 1 {
            results.push(
                result
                    .with_error_code(ResponseError::DuplicateResource.code())
                    .with_error_message(Some(str_bytes(format!(
                        "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                    )))),
            );
            continue;
        }
        let infos: Vec<CredentialInfo> = image
            .scram
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|(m, c)| {
                Some(
                    CredentialInfo::default()
                        .with_mechanism(Mechanism::from_name(m)?.kafka_type())
                        .with_iterations(c.iterations),
                )
            })
            .collect();
        if infos.is_empty() {
            results.push(
                result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(str_bytes(format!(
                        "Attempt to describe a user credential that does not exist: {user}"
                    )))),
            );
        } else {
            results.push(result.with_error_code(NONE).with_credential_infos(infos));
        }
    }
    DescribeUserScramCredentialsResponse::default()
        .with_error_code(NONE)
        .with_results(results)
}
