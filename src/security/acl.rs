//! Kafka ACLs: the resource, pattern, operation and permission enums with their wire
//! codes, ACL bindings and the filters of DescribeAcls / DeleteAcls, the checks of
//! CreateAcls, and an [`Authorizer`] with the rules of Kafka's `StandardAuthorizer`
//! (KIP-11 ACLs, KIP-290 prefixed ACLs, KIP-679 `authorizeByResourceType`).
//!
//! Pure data, no I/O and no locks: the caller builds a new [`Authorizer`] when the ACLs
//! or the configuration change, and shares it between request handlers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The resource name (in a LITERAL binding) or host that matches every name or host.
pub const WILDCARD: &str = "*";

/// The principal that matches every principal, whatever its type.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Kafka's `INVALID_REQUEST` error code.
pub const INVALID_REQUEST: i16 = 42;

/// Defines one of Kafka's ACL enums: wire codes, Kafka names (also the serde form) and
/// the conversions. Every enum has an `Unknown` variant for codes and names it lacks.
macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, $kafka:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $kafka)] $variant, )+
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const VALUES: &'static [$name] = &[$($name::$variant),+];

            /// The value for a wire code; codes Kafka does not define give `Unknown`, as in
            /// Kafka's `fromCode`.
            pub fn from_code(code: i8) -> Self {
                match code {
                    $( $code => $name::$variant, )+
                    _ => $name::Unknown,
                }
            }

            /// The wire code.
            pub fn code(self) -> i8 {
                match self {
                    $( $name::$variant => $code, )+
                }
            }

            /// Kafka's name for the value, as in `TRANSACTIONAL_ID`.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $kafka, )+
                }
            }

            /// The value for a Kafka name, ignoring case; other names give `Unknown`, as
            /// in Kafka's `fromString`.
            pub fn from_name(name: &str) -> Self {
                Self::VALUES
                    .iter()
                    .copied()
                    .find(|value| value.name().eq_ignore_ascii_case(name))
                    .unwrap_or($name::Unknown)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum! {
    /// The kind of resource an ACL protects.
    ResourceType {
        /// A code this broker does not know.
        Unknown = 0, "UNKNOWN";
        /// Any resource type (filters only).
        Any = 1, "ANY";
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (named [`CLUSTER_NAME`]).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
        /// A delegation token.
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// A user (KIP-373).
        User = 7, "USER";
    }
}

kafka_enum! {
    /// How an ACL's resource name is matched.
    PatternType {
        /// A code this broker does not know.
        Unknown = 0, "UNKNOWN";
        /// Any pattern type, names compared exactly (filters only).
        Any = 1, "ANY";
        /// Every binding that applies to the name (filters only).
        Match = 2, "MATCH";
        /// The exact name, or every name for `*`.
        Literal = 3, "LITERAL";
        /// Every name that starts with the given prefix.
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// An operation on a resource.
    AclOperation {
        /// A code this broker does not know.
        Unknown = 0, "UNKNOWN";
        /// Any operation (filters only).
        Any = 1, "ANY";
        /// Every operation.
        All = 2, "ALL";
        /// Read.
        Read = 3, "READ";
        /// Write.
        Write = 4, "WRITE";
        /// Create.
        Create = 5, "CREATE";
        /// Delete.
        Delete = 6, "DELETE";
        /// Alter.
        Alter = 7, "ALTER";
        /// Describe.
        Describe = 8, "DESCRIBE";
        /// Inter-broker cluster actions.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Describe configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Alter configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Idempotent produce.
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        /// Create delegation tokens.
        CreateTokens = 13, "CREATE_TOKENS";
        /// Describe delegation tokens.
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

kafka_enum! {
    /// Whether an ACL allows or denies.
    AclPermissionType {
        /// A code this broker does not know.
        Unknown = 0, "UNKNOWN";
        /// Any permission type (filters only).
        Any = 1, "ANY";
        /// Deny the operation.
        Deny = 2, "DENY";
        /// Allow the operation.
        Allow = 3, "ALLOW";
    }
}

/// One ACL: a principal from a host may (or may not) do an operation on the resources a
/// pattern names. Stored in the metadata log as JSON, enums by their Kafka names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The resource name, the prefix of a PREFIXED binding, or `*` for every name.
    pub resource_name: String,
    /// LITERAL or PREFIXED.
    pub pattern_type: PatternType,
    /// `Type:Name`, as in `User:alice`; `User:*` for every principal.
    pub principal: String,
    /// The client's IP address, or `*` for every host.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// ALLOW or DENY.
    pub permission: AclPermissionType,
}

impl AclBinding {
    /// The filter that matches exactly this binding.
    pub fn to_filter(&self) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: self.resource_type,
            resource_name: Some(self.resource_name.clone()),
            pattern_type: self.pattern_type,
            principal: Some(self.principal.clone()),
            host: Some(self.host.clone()),
            operation: self.operation,
            permission: self.permission,
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

/// Why an ACL binding or filter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Kafka answers `INVALID_REQUEST` (42) with this message.
    #[error("{0}")]
    Invalid(String),
}

impl AclError {
    /// The Kafka error code to answer with.
    pub fn error_code(&self) -> i16 {
        match self {
            AclError::Invalid(_) => INVALID_REQUEST,
        }
    }
}

fn invalid(message: impl Into<String>) -> AclError {
    AclError::Invalid(message.into())
}

/// Kafka's checks of one CreateAcls binding (`AclApis.handleCreateAcls`, then
/// `AclControlManager.validateNewAcl`), in Kafka's order and with its messages. Every
/// refusal is `INVALID_REQUEST`. Stricter than Kafka: a PREFIXED `*`, an empty principal
/// type or name, and an empty host are refused too.
pub fn validate_binding(binding: &AclBinding) -> Result<(), AclError> {
    if binding.resource_type == ResourceType::Cluster && binding.resource_name != CLUSTER_NAME {
        return Err(invalid(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        )));
    }
    if binding.resource_name.is_empty() {
        return Err(invalid("Invalid empty resource name"));
    }
    if matches!(
        binding.resource_type,
        ResourceType::Unknown | ResourceType::Any
    ) {
        return Err(invalid(format!(
            "Invalid resourceType {}",
            binding.resource_type
        )));
    }
    if !matches!(
        binding.pattern_type,
        PatternType::Literal | PatternType::Prefixed
    ) {
        return Err(invalid(format!(
            "Invalid patternType {}",
            binding.pattern_type
        )));
    }
    if matches!(binding.operation, AclOperation::Unknown | AclOperation::Any) {
        return Err(invalid(format!("Invalid operation {}", binding.operation)));
    }
    if !matches!(
        binding.permission,
        AclPermissionType::Allow | AclPermissionType::Deny
    ) {
        return Err(invalid(format!(
            "Invalid permissionType {}",
            binding.permission
        )));
    }
    if binding.pattern_type == PatternType::Prefixed && binding.resource_name == WILDCARD {
        return Err(invalid(
            "The wildcard resource name `*` is only valid with patternType LITERAL",
        ));
    }
    let Some((kind, name)) = binding.principal.split_once(':') else {
        return Err(invalid(format!(
            "Could not parse principal from `{}` (no colon is present separating the \
             principal type from the principal name)",
            binding.principal
        )));
    };
    if kind.is_empty() || name.is_empty() {
        return Err(invalid(format!(
            "Invalid principal `{}`: the principal type and name must not be empty",
            binding.principal
        )));
    }
    if binding.host.is_empty() {
        return Err(invalid("Invalid empty host"));
    }
    Ok(())
}

/// A DescribeAcls / DeleteAcls filter. `Any` values and `None` strings match everything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingFilter {
    /// The resource type, or `Any`.
    pub resource_type: ResourceType,
    /// The resource name; `None` for every name.
    pub resource_name: Option<String>,
    /// LITERAL or PREFIXED (that pattern type and name exactly), `Any` (any pattern type,
    /// the name exactly) or `Match` (every binding that applies to the name).
    pub pattern_type: PatternType,
    /// The principal, compared exactly (`User:*` matches only `User:*` bindings); `None`
    /// for every principal.
    pub principal: Option<String>,
    /// The host, compared exactly; `None` for every host.
    pub host: Option<String>,
    /// The operation, or `Any`.
    pub operation: AclOperation,
    /// The permission type, or `Any`.
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Whether the binding passes the filter, as Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding) && self.matches_entry(binding)
    }

    /// Kafka's `ResourcePatternFilter.matches`.
    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        let same_name = |name: &String| *name == binding.resource_name;
        match (self.pattern_type, &self.resource_name) {
            (PatternType::Match, None) => true,
            (PatternType::Match, Some(name)) => match binding.pattern_type {
                PatternType::Literal => same_name(name) || binding.resource_name == WILDCARD,
                PatternType::Prefixed => name.starts_with(binding.resource_name.as_str()),
                _ => false,
            },
            (PatternType::Any, name) => name.as_ref().is_none_or(same_name),
            (pattern_type, name) => {
                pattern_type == binding.pattern_type && name.as_ref().is_none_or(same_name)
            }
        }
    }

    /// Kafka's `AccessControlEntryFilter.matches`.
    fn matches_entry(&self, binding: &AclBinding) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == AclOperation::Any || self.operation == binding.operation)
            && (self.permission == AclPermissionType::Any || self.permission == binding.permission)
    }
}

/// Kafka's check of a DescribeAcls / DeleteAcls filter (`AclControlManager.validateFilter`):
/// an `Unknown` resource type, pattern type, operation or permission type is refused, as
/// `INVALID_REQUEST`.
pub fn validate_filter(filter: &AclBindingFilter) -> Result<(), AclError> {
    if filter.resource_type == ResourceType::Unknown || filter.pattern_type == PatternType::Unknown
    {
        return Err(invalid("Unknown patternFilter."));
    }
    if filter.operation == AclOperation::Unknown || filter.permission == AclPermissionType::Unknown
    {
        return Err(invalid("Unknown entryFilter."));
    }
    Ok(())
}

/// Why the authorizer decided as it did, for logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The principal is a super user.
    SuperUser,
    /// This ALLOW binding matched, and no DENY binding did.
    AllowAcl(Arc<AclBinding>),
    /// This DENY binding matched.
    DenyAcl(Arc<AclBinding>),
    /// No ACL applies to the resource: the result is `allow.everyone.if.no.acl.found`.
    NoAclFound,
    /// ACLs apply to the resource, but none allows this principal, host and operation.
    NoMatchingAllow,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SuperUser => f.write_str("super user"),
            Reason::AllowAcl(acl) | Reason::DenyAcl(acl) => write!(f, "ACL {acl}"),
            Reason::NoAclFound => f.write_str("no ACL applies to the resource"),
            Reason::NoMatchingAllow => f.write_str("no ACL allows the operation"),
        }
    }
}

/// The authorizer's answer for one action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The action is allowed.
    Allowed(Reason),
    /// The action is denied.
    Denied(Reason),
}

impl Decision {
    /// Whether the action is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    /// Why.
    pub fn reason(&self) -> &Reason {
        match self {
            Decision::Allowed(reason) | Decision::Denied(reason) => reason,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Allowed(reason) => write!(f, "Allowed ({reason})"),
            Decision::Denied(reason) => write!(f, "Denied ({reason})"),
        }
    }
}

/// The bindings of one resource type, keyed by resource name.
#[derive(Debug, Default)]
struct TypeIndex {
    /// LITERAL bindings by name, the wildcard `*` included.
    literal: BTreeMap<String, Vec<Arc<AclBinding>>>,
    /// PREFIXED bindings by prefix.
    prefixed: BTreeMap<String, Vec<Arc<AclBinding>>>,
    /// The lengths (in bytes) of the prefixes in `prefixed`: a lookup tries only these.
    prefix_lens: BTreeSet<usize>,
}

impl TypeIndex {
    fn insert(&mut self, binding: Arc<AclBinding>) {
        let name = binding.resource_name.clone();
        if binding.pattern_type == PatternType::Prefixed {
            self.prefix_lens.insert(name.len());
            self.prefixed.entry(name).or_default().push(binding);
        } else {
            self.literal.entry(name).or_default().push(binding);
        }
    }

    /// The bindings that apply to the resource `name`: LITERAL with that name, PREFIXED
    /// with a prefix of it, and the LITERAL wildcard.
    fn applying_to<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Arc<AclBinding>> {
        let exact = self.literal.get(name);
        let prefixed = self
            .prefix_lens
            .range(..=name.len())
            .filter_map(move |&len| name.get(..len))
            .filter_map(|prefix| self.prefixed.get(prefix));
        let wildcard = if name == WILDCARD {
            None
        } else {
            self.literal.get(WILDCARD)
        };
        exact.into_iter().chain(prefixed).chain(wildcard).flatten()
    }

    /// The LITERAL wildcard bindings: all that apply to a name no other binding names.
    fn wildcard(&self) -> impl Iterator<Item = &Arc<AclBinding>> {
        self.literal.get(WILDCARD).into_iter().flatten()
    }

    fn all(&self) -> impl Iterator<Item = &Arc<AclBinding>> {
        self.literal
            .values()
            .chain(self.prefixed.values())
            .flatten()
    }

    fn len(&self) -> usize {
        self.all().count()
    }
}

/// What one binding says about an action on a resource it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

fn principal_matches(acl_principal: &str, principal: &str) -> bool {
    acl_principal == principal || acl_principal == WILDCARD_PRINCIPAL
}

fn host_matches(acl_host: &str, host: &str) -> bool {
    acl_host == WILDCARD || acl_host == host
}

/// Whether an ALLOW of `granted` also allows `asked`: READ, WRITE, DELETE and ALTER allow
/// DESCRIBE, ALTER_CONFIGS allows DESCRIBE_CONFIGS. (ALL is handled by the caller.)
fn allow_implies(granted: AclOperation, asked: AclOperation) -> bool {
    use AclOperation::*;
    matches!(
        (granted, asked),
        (Read | Write | Delete | Alter, Describe) | (AlterConfigs, DescribeConfigs)
    )
}

/// What `acl`, which applies to the resource, says about `principal` doing `op` from
/// `host`; `None` if it is about someone or something else. Kafka's
/// `StandardAuthorizerData.findResult`: only ALLOW bindings imply other operations, and a
/// binding that is not ALLOW denies.
fn effect(acl: &AclBinding, principal: &str, host: &str, op: AclOperation) -> Option<Effect> {
    if !principal_matches(&acl.principal, principal) || !host_matches(&acl.host, host) {
        return None;
    }
    let allow = acl.permission == AclPermissionType::Allow;
    let covers = acl.operation == AclOperation::All
        || acl.operation == op
        || (allow && allow_implies(acl.operation, op));
    match (covers, allow) {
        (false, _) => None,
        (true, true) => Some(Effect::Allow),
        (true, false) => Some(Effect::Deny),
    }
}

/// The scan of Kafka's default `authorizeByResourceType`: whether some ALLOW of `op` (or
/// ALL) for the principal and host survives the DENYs. A DENY on `*` kills all, an ALLOW
/// on `*` survives the rest; otherwise an ALLOW is dominated by a PREFIXED DENY of a
/// prefix of its name, and a LITERAL ALLOW also by a LITERAL DENY of the same name.
fn some_allow_survives(index: &TypeIndex, principal: &str, host: &str, op: AclOperation) -> bool {
    let mut deny_literals = HashSet::new();
    let mut deny_prefixes = HashSet::new();
    let mut allows = Vec::new();
    let mut wildcard_allow = false;
    for acl in index.all() {
        if !host_matches(&acl.host, host)
            || !principal_matches(&acl.principal, principal)
            || (acl.operation != op && acl.operation != AclOperation::All)
        {
            continue;
        }
        let name = acl.resource_name.as_str();
        match (acl.permission, acl.pattern_type) {
            (AclPermissionType::Deny, PatternType::Literal) if name == WILDCARD => {
                return false;
            }
            (AclPermissionType::Deny, PatternType::Literal) => {
                deny_literals.insert(name);
            }
            (AclPermissionType::Deny, PatternType::Prefixed) => {
                deny_prefixes.insert(name);
            }
            (AclPermissionType::Allow, PatternType::Literal) if name == WILDCARD => {
                wildcard_allow = true;
            }
            (AclPermissionType::Allow, pattern_type) => allows.push((pattern_type, name)),
            _ => {}
        }
    }
    if wildcard_allow {
        return true;
    }
    allows.into_iter().any(|(pattern_type, name)| {
        let denied_literal = pattern_type == PatternType::Literal && deny_literals.contains(name);
        let denied_prefix = name
            .char_indices()
            .filter_map(|(at, c)| name.get(..at + c.len_utf8()))
            .any(|prefix| deny_prefixes.contains(prefix));
        !denied_literal && !denied_prefix
    })
}

/// Answers "may this principal do this?" from a set of ACL bindings, with the rules of
/// Kafka's `StandardAuthorizer`.
#[derive(Debug, Default)]
pub struct Authorizer {
    /// The bindings by resource type, for lookups.
    by_type: BTreeMap<ResourceType, TypeIndex>,
    /// Every binding, sorted and without duplicates.
    bindings: Vec<Arc<AclBinding>>,
    /// Principals (`User:admin`) allowed everything.
    super_users: Vec<String>,
    /// The answer when no ACL applies to a resource.
    allow_everyone_if_no_acl_found: bool,
}

impl Authorizer {
    /// An authorizer over `bindings` (duplicates dropped). Bindings should have passed
    /// [`validate_binding`]; ones whose pattern type is neither LITERAL nor PREFIXED can
    /// match nothing and are dropped.
    pub fn new(
        bindings: impl IntoIterator<Item = AclBinding>,
        super_users: Vec<String>,
        allow_everyone_if_no_acl_found: bool,
    ) -> Authorizer {
        let unique: BTreeSet<AclBinding> = bindings
            .into_iter()
            .filter(|b| matches!(b.pattern_type, PatternType::Literal | PatternType::Prefixed))
            .collect();
        let mut by_type: BTreeMap<ResourceType, TypeIndex> = BTreeMap::new();
        let mut all = Vec::with_capacity(unique.len());
        for binding in unique {
            let binding = Arc::new(binding);
            by_type
                .entry(binding.resource_type)
                .or_default()
                .insert(Arc::clone(&binding));
            all.push(binding);
        }
        Authorizer {
            by_type,
            bindings: all,
            super_users,
            allow_everyone_if_no_acl_found,
        }
    }

    /// Whether `principal` (`User:alice`) may do `op` on the resource, from `host` (the
    /// client's IP address as text). Super users may do anything. Otherwise the bindings
    /// that apply to the resource (LITERAL with its name, LITERAL `*`, PREFIXED with a
    /// prefix of its name) and to the principal (itself or `User:*`) and host (itself or
    /// `*`) decide: a DENY of `op` or ALL wins, then an ALLOW of `op`, of ALL, or of an
    /// operation implying `op` (READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS
    /// implies DESCRIBE_CONFIGS). With no binding at all on the resource, the answer is
    /// `allow_everyone_if_no_acl_found`. `op` and `resource_type` should be concrete (not
    /// `Any` or `Unknown`).
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        if self.is_super_user(principal) {
            return Decision::Allowed(Reason::SuperUser);
        }
        let applying = self
            .by_type
            .get(&resource_type)
            .into_iter()
            .flat_map(|index| index.applying_to(name));
        self.decide(applying, principal, host, op)
    }

    /// Whether `principal` may do `op` on at least one resource of the type: Kafka's
    /// `authorizeByResourceType` (KIP-679), the default one `StandardAuthorizer` uses.
    ///
    /// True for super users, and when `op` would be allowed on a name no LITERAL or
    /// PREFIXED binding names (Kafka asks about a made-up name): only `*` bindings apply
    /// there, or none, and then `allow_everyone_if_no_acl_found` decides. Otherwise true
    /// if some ALLOW of exactly `op` or ALL (no implied operations here) for the principal
    /// and host is not dominated by a DENY (see `some_allow_survives`). False for `Any` or
    /// `Unknown` arguments. Costs a pass over the bindings of the type.
    pub fn authorize_any_of_type(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if matches!(op, AclOperation::Any | AclOperation::Unknown)
            || matches!(resource_type, ResourceType::Any | ResourceType::Unknown)
        {
            return false;
        }
        if self.is_super_user(principal) {
            return true;
        }
        let Some(index) = self.by_type.get(&resource_type) else {
            return self.allow_everyone_if_no_acl_found;
        };
        if self
            .decide(index.wildcard(), principal, host, op)
            .is_allowed()
        {
            return true;
        }

        some_allow_survives(index, principal, host, op)
    }

    /// Every binding, sorted.
    pub fn bindings(&self) -> impl Iterator<Item = &AclBinding> {
        self.bindings.iter().map(|binding| binding.as_ref())
    }

    /// The bindings that pass `filter` (DescribeAcls), sorted.
    pub fn acls<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        self.bindings()
            .filter(move |binding| filter.matches(binding))
    }

    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// How many bindings there are for a resource type.
    pub fn len_of_type(&self, resource_type: ResourceType) -> usize {
        self.by_type.get(&resource_type).map_or(0, TypeIndex::len)
    }

    /// The super users.
    pub fn super_users(&self) -> &[String] {
        &self.super_users
    }

    /// The answer when no ACL applies to a resource.
    pub fn allow_everyone_if_no_acl_found(&self) -> bool {
        self.allow_everyone_if_no_acl_found
    }

    fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|user| user == principal)
    }

    /// Kafka's decision from the bindings that apply to a resource: the first DENY wins,
    /// else the first ALLOW, else the default if there were no bindings at all.
    fn decide<'a>(
        &self,
        applying: impl Iterator<Item = &'a Arc<AclBinding>>,
        principal: &str,
        host: &str,
        op: AclOperation,
    ) -> Decision {
        let mut any_applies = false;
        let mut allow = None;
        for acl in applying {
            any_applies = true;
            match effect(acl, principal, host, op) {
                Some(Effect::Deny) => return Decision::Denied(Reason::DenyAcl(Arc::clone(acl))),
                Some(Effect::Allow) => {
                    allow.get_or_insert(acl);
                }
                None => {}
            }
        }
        match allow {
            Some(acl) => Decision::Allowed(Reason::AllowAcl(Arc::clone(acl))),
            None if any_applies => Decision::Denied(Reason::NoMatchingAllow),
            None if self.allow_everyone_if_no_acl_found => Decision::Allowed(Reason::NoAclFound),
            None => Decision::Denied(Reason::NoAclFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AclOperation::*;
    use super::AclPermissionType::{Allow, Deny};
    use super::PatternType::{Literal, Match, Prefixed};
    use super::*;

    const ALICE: &str = "User:alice";
    const BOB: &str = "User:bob";
    const ADMIN: &str = "User:admin";
    const HOST: &str = "10.0.0.1";

    fn binding(
        pattern_type: PatternType,
        name: &str,
        principal: &str,
        operation: AclOperation,
        permission: AclPermissionType,
    ) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: name.to_owned(),
            pattern_type,
            principal: principal.to_owned(),
            host: WILDCARD.to_owned(),
            operation,
            permission,
        }
    }

    /// An ACL for alice, from any host, on topics.
    fn alice(
        pattern_type: PatternType,
        name: &str,
        operation: AclOperation,
        permission: AclPermissionType,
    ) -> AclBinding {
        binding(pattern_type, name, ALICE, operation, permission)
    }

    fn authorizer(bindings: Vec<AclBinding>) -> Authorizer {
        Authorizer::new(bindings, vec![ADMIN.to_owned()], false)
    }

    fn may(authorizer: &Authorizer, op: AclOperation, topic: &str) -> bool {
        authorizer
            .authorize(ALICE, HOST, op, ResourceType::Topic, topic)
            .is_allowed()
    }

    fn may_any(authorizer: &Authorizer, op: AclOperation) -> bool {
        authorizer.authorize_any_of_type(ALICE, HOST, op, ResourceType::Topic)
    }

    // ---- enums ----

    #[test]
    fn enum_codes_and_names_round_trip() {
        fn check<T: Copy + PartialEq + fmt::Debug + fmt::Display>(
            values: &[T],
            code: fn(T) -> i8,
            from_code: fn(i8) -> T,
            from_name: fn(&str) -> T,
        ) {
            for (i, &value) in values.iter().enumerate() {
                assert_eq!(code(value), i as i8);
                assert_eq!(from_code(code(value)), value);
                assert_eq!(from_name(&value.to_string().to_lowercase()), value);
            }
        }
        check(
            ResourceType::VALUES,
            ResourceType::code,
            ResourceType::from_code,
            ResourceType::from_name,
        );
        check(
            PatternType::VALUES,
            PatternType::code,
            PatternType::from_code,
            PatternType::from_name,
        );
        check(
            AclOperation::VALUES,
            AclOperation::code,
            AclOperation::from_code,
            AclOperation::from_name,
        );
        check(
            AclPermissionType::VALUES,
            AclPermissionType::code,
            AclPermissionType::from_code,
            AclPermissionType::from_name,
        );
        assert_eq!(ResourceType::VALUES.len(), 8);
        assert_eq!(PatternType::VALUES.len(), 5);
        assert_eq!(AclOperation::VALUES.len(), 15);
        assert_eq!(AclPermissionType::VALUES.len(), 4);
    }

    #[test]
    fn enum_kafka_codes_and_names() {
        assert_eq!(ResourceType::TransactionalId.code(), 5);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(
            ResourceType::DelegationToken.to_string(),
            "DELEGATION_TOKEN"
        );
        assert_eq!(Prefixed.code(), 4);
        assert_eq!(Match.to_string(), "MATCH");
        assert_eq!(ClusterAction.to_string(), "CLUSTER_ACTION");
        assert_eq!(IdempotentWrite.code(), 12);
        assert_eq!(DescribeTokens.code(), 14);
        assert_eq!(Allow.code(), 3);
        assert_eq!(Deny.to_string(), "DENY");
        assert_eq!(AclOperation::from_code(15), AclOperation::Unknown);
        assert_eq!(AclOperation::from_code(-1), AclOperation::Unknown);
        assert_eq!(ResourceType::from_code(8), ResourceType::Unknown);
        assert_eq!(AclOperation::from_name("Describe_Configs"), DescribeConfigs);
        assert_eq!(AclOperation::from_name("nope"), AclOperation::Unknown);
    }

    #[test]
    fn binding_serde_round_trip() {
        let original = AclBinding {
            resource_type: ResourceType::TransactionalId,
            resource_name: "tx-".to_owned(),
            pattern_type: Prefixed,
            principal: ALICE.to_owned(),
            host: HOST.to_owned(),
            operation: DescribeConfigs,
            permission: Deny,
        };
        let json = serde_json::to_string(&original).unwrap();
        assert_eq!(
            json,
            r#"{"resource_type":"TRANSACTIONAL_ID","resource_name":"tx-","pattern_type":"PREFIXED","principal":"User:alice","host":"10.0.0.1","operation":"DESCRIBE_CONFIGS","permission":"DENY"}"#
        );
        let back: AclBinding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, original);
        for &op in AclOperation::VALUES {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{op}\""));
            assert_eq!(serde_json::from_str::<AclOperation>(&json).unwrap(), op);
        }
        assert!(serde_json::from_str::<AclOperation>("\"FLY\"").is_err());
    }

    // ---- validation ----

    fn valid() -> AclBinding {
        alice(Literal, "orders", Read, Allow)
    }

    fn refusal(edit: impl FnOnce(&mut AclBinding)) -> String {
        let mut b = valid();
        edit(&mut b);
        let err = validate_binding(&b).unwrap_err();
        assert_eq!(err.error_code(), INVALID_REQUEST);
        err.to_string()
    }

    #[test]
    fn validate_accepts_concrete_bindings() {
        validate_binding(&valid()).unwrap();
        validate_binding(&alice(Prefixed, "orders-", All, Deny)).unwrap();
        validate_binding(&binding(
            Literal,
            WILDCARD,
            WILDCARD_PRINCIPAL,
            Write,
            Allow,
        ))
        .unwrap();
        let mut cluster = valid();
        cluster.resource_type = ResourceType::Cluster;
        cluster.resource_name = CLUSTER_NAME.to_owned();
        cluster.operation = ClusterAction;
        cluster.host = HOST.to_owned();
        validate_binding(&cluster).unwrap();
        for &rt in &ResourceType::VALUES[2..] {
            let mut b = valid();
            b.resource_type = rt;
            if rt == ResourceType::Cluster {
                b.resource_name = CLUSTER_NAME.to_owned();
            }
            validate_binding(&b).unwrap();
        }
    }

    #[test]
    fn validate_refuses_filter_values_and_unknowns() {
        for rt in [ResourceType::Any, ResourceType::Unknown] {
            assert_eq!(
                refusal(|b| b.resource_type = rt),
                format!("Invalid resourceType {rt}")
            );
        }
        for pt in [PatternType::Any, Match, PatternType::Unknown] {
            assert_eq!(
                refusal(|b| b.pattern_type = pt),
                format!("Invalid patternType {pt}")
            );
        }
        for op in [AclOperation::Any, AclOperation::Unknown] {
            assert_eq!(
                refusal(|b| b.operation = op),
                format!("Invalid operation {op}")
            );
        }
        for perm in [AclPermissionType::Any, AclPermissionType::Unknown] {
            assert_eq!(
                refusal(|b| b.permission = perm),
                format!("Invalid permissionType {perm}")
            );
        }
    }

    #[test]
    fn validate_refuses_bad_names_principals_and_hosts() {
        assert_eq!(
            refusal(|b| b.resource_name.clear()),
            "Invalid empty resource name"
        );
        assert_eq!(
            refusal(|b| b.resource_type = ResourceType::Cluster),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        assert_eq!(
            refusal(|b| {
                b.resource_type = ResourceType::Cluster;
                b.resource_name = WILDCARD.to_owned();
            }),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        assert!(refusal(|b| {
            b.pattern_type = Prefixed;
            b.resource_name = WILDCARD.to_owned();
        })
        .contains("only valid with patternType LITERAL"));
        assert!(refusal(|b| b.principal = "alice".to_owned())
            .starts_with("Could not parse principal from `alice` (no colon is present"));
        assert!(refusal(|b| b.principal = "User:".to_owned()).contains("must not be empty"));
        assert!(refusal(|b| b.principal = ":alice".to_owned()).contains("must not be empty"));
        assert_eq!(refusal(|b| b.host.clear()), "Invalid empty host");
        // A name with a colon is fine: only the first colon separates.
        let mut b = valid();
        b.principal = "User:CN=a:b".to_owned();
        validate_binding(&b).unwrap();
    }

    // ---- filters ----

    fn filter(pattern_type: PatternType, name: Option<&str>) -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Topic,
            resource_name: name.map(str::to_owned),
            pattern_type,
            ..AclBindingFilter::any()
        }
    }

    fn sample() -> Vec<AclBinding> {
        vec![
            alice(Literal, "foo", Read, Allow),
            alice(Literal, "foobar", Read, Allow),
            alice(Literal, WILDCARD, Read, Allow),
            alice(Prefixed, "foo", Read, Allow),
            alice(Prefixed, "fo", Read, Allow),
            alice(Prefixed, "foobarbaz", Read, Allow),
            alice(Prefixed, "bar", Read, Allow),
        ]
    }

    /// The sample bindings that pass the filter, as `PATTERN:name`.
    fn matched(filter: &AclBindingFilter) -> Vec<String> {
        sample()
            .iter()
            .filter(|b| filter.matches(b))
            .map(|b| format!("{}:{}", b.pattern_type, b.resource_name))
            .collect()
    }

    #[test]
    fn filter_any_matches_everything() {
        let any = AclBindingFilter::any();
        assert!(sample().iter().all(|b| any.matches(b)));
        assert_eq!(matched(&filter(PatternType::Any, None)).len(), 7);
        assert_eq!(matched(&filter(Match, None)).len(), 7);
        let mut group = filter(PatternType::Any, None);
        group.resource_type = ResourceType::Group;
        assert!(matched(&group).is_empty());
    }

    #[test]
    fn filter_literal_and_prefixed_match_that_pattern_type_exactly() {
        assert_eq!(matched(&filter(Literal, Some("foo"))), vec!["LITERAL:foo"]);
        assert_eq!(
            matched(&filter(Prefixed, Some("foo"))),
            vec!["PREFIXED:foo"]
        );
        assert_eq!(matched(&filter(Literal, None)).len(), 3);
        assert_eq!(matched(&filter(Prefixed, None)).len(), 4);
        // A literal "*" filter matches only the wildcard binding itself.
        assert_eq!(matched(&filter(Literal, Some(WILDCARD))), vec!["LITERAL:*"]);
        assert!(matched(&filter(Prefixed, Some("foob"))).is_empty());
    }

    #[test]
    fn filter_any_pattern_compares_names_exactly() {
        assert_eq!(
            matched(&filter(PatternType::Any, Some("foo"))),
            vec!["LITERAL:foo", "PREFIXED:foo"]
        );
        assert!(matched(&filter(PatternType::Any, Some("foob"))).is_empty());
    }

    #[test]
    fn filter_match_finds_what_applies_to_the_name() {
        assert_eq!(
            matched(&filter(Match, Some("foobar"))),
            vec!["LITERAL:foobar", "LITERAL:*", "PREFIXED:foo", "PREFIXED:fo",]
        );
        assert_eq!(
            matched(&filter(Match, Some("foo"))),
            vec!["LITERAL:foo", "LITERAL:*", "PREFIXED:foo", "PREFIXED:fo"]
        );
        assert_eq!(matched(&filter(Match, Some("zzz"))), vec!["LITERAL:*"]);
    }

    #[test]
    fn filter_entry_fields_compare_exactly() {
        let bindings = [
            alice(Literal, "t", Read, Allow),
            binding(Literal, "t", WILDCARD_PRINCIPAL, Read, Deny),
            AclBinding {
                host: HOST.to_owned(),
                ..alice(Literal, "t", Write, Allow)
            },
        ];
        let count = |f: AclBindingFilter| bindings.iter().filter(|b| f.matches(b)).count();
        let any = AclBindingFilter::any;
        assert_eq!(count(any()), 3);
        assert_eq!(
            count(AclBindingFilter {
                principal: Some(ALICE.to_owned()),
                ..any()
            }),
            2
        );
        // The wildcard principal and host are not wildcards in a filter.
        assert_eq!(
            count(AclBindingFilter {
                principal: Some(WILDCARD_PRINCIPAL.to_owned()),
                ..any()
            }),
            1
        );
        assert_eq!(
            count(AclBindingFilter {
                host: Some(WILDCARD.to_owned()),
                ..any()
            }),
            2
        );
        assert_eq!(
            count(AclBindingFilter {
                host: Some(HOST.to_owned()),
                ..any()
            }),
            1
        );
        assert_eq!(
            count(AclBindingFilter {
                operation: Read,
                ..any()
            }),
            2
        );
        assert_eq!(
            count(AclBindingFilter {
                permission: Deny,
                ..any()
            }),
            1
        );
        assert_eq!(
            count(AclBindingFilter {
                operation: All,
                ..any()
            }),
            0
        );
        for b in &bindings {
            assert_eq!(count(b.to_filter()), 1);
        }
    }

    #[test]
    fn validate_filter_refuses_unknowns() {
        validate_filter(&AclBindingFilter::any()).unwrap();
        validate_filter(&filter(Match, Some("x"))).unwrap();
        let refused = |f: AclBindingFilter| validate_filter(&f).unwrap_err().to_string();
        let any = AclBindingFilter::any;
        assert_eq!(
            refused(AclBindingFilter {
                resource_type: ResourceType::Unknown,
                ..any()
            }),
            "Unknown patternFilter."
        );
        assert_eq!(
            refused(AclBindingFilter {
                pattern_type: PatternType::Unknown,
                ..any()
            }),
            "Unknown patternFilter."
        );
        assert_eq!(
            refused(AclBindingFilter {
                operation: AclOperation::Unknown,
                ..any()
            }),
            "Unknown entryFilter."
        );
        let err = validate_filter(&AclBindingFilter {
            permission: AclPermissionType::Unknown,
            ..any()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "Unknown entryFilter.");
        assert_eq!(err.error_code(), INVALID_REQUEST);
    }

    // ---- authorize ----

    #[test]
    fn literal_prefixed_and_wildcard_resources() {
        let a = authorizer(vec![alice(Literal, "orders", Read, Allow)]);
        assert!(may(&a, Read, "orders"));
        assert!(!may(&a, Read, "orders-eu"));
        assert!(!may(&a, Read, "order"));
        assert!(!may(&a, Write, "orders"));

        let a = authorizer(vec![alice(Prefixed, "orders", Read, Allow)]);
        assert!(may(&a, Read, "orders"));
        assert!(may(&a, Read, "orders-eu"));
        assert!(!may(&a, Read, "order"));
        assert!(!may(&a, Read, "xorders"));

        let a = authorizer(vec![alice(Literal, WILDCARD, Read, Allow)]);
        assert!(may(&a, Read, "orders"));
        assert!(may(&a, Read, "anything"));
        assert!(!may(&a, Write, "orders"));
    }

    #[test]
    fn resource_types_are_separate() {
        let mut group = alice(Literal, "orders", Read, Allow);
        group.resource_type = ResourceType::Group;
        let a = authorizer(vec![group]);
        assert!(!may(&a, Read, "orders"));
        assert!(a
            .authorize(ALICE, HOST, Read, ResourceType::Group, "orders")
            .is_allowed());
    }

    #[test]
    fn deny_wins_over_allow() {
        let allow = alice(Literal, "orders", Read, Allow);
        let cases = [
            alice(Literal, "orders", Read, Deny),
            alice(Prefixed, "ord", Read, Deny),
            alice(Literal, WILDCARD, Read, Deny),
            alice(Literal, "orders", All, Deny),
            binding(Literal, "orders", WILDCARD_PRINCIPAL, Read, Deny),
        ];
        for deny in cases {
            let a = authorizer(vec![allow.clone(), deny.clone()]);
            assert_eq!(
                a.authorize(ALICE, HOST, Read, ResourceType::Topic, "orders"),
                Decision::Denied(Reason::DenyAcl(Arc::new(deny)))
            );
        }
        // A deny of another operation does not deny this one.
        let a = authorizer(vec![allow.clone(), alice(Literal, "orders", Write, Deny)]);
        assert!(may(&a, Read, "orders"));
        // Neither does a deny for someone else.
        let a = authorizer(vec![allow, binding(Literal, "orders", BOB, Read, Deny)]);
        assert!(may(&a, Read, "orders"));
    }

    #[test]
    fn deny_by_wildcard_wins_over_allow_by_prefix() {
        let a = authorizer(vec![
            alice(Prefixed, "ord", Write, Allow),
            alice(Literal, WILDCARD, Write, Deny),
        ]);
        assert!(!may(&a, Write, "orders"));
    }

    #[test]
    fn principal_wildcard() {
        let a = authorizer(vec![binding(
            Literal,
            "orders",
            WILDCARD_PRINCIPAL,
            Read,
            Allow,
        )]);
        assert!(may(&a, Read, "orders"));
        for principal in [BOB, "User:anyone", "Group:ops"] {
            assert!(a
                .authorize(principal, HOST, Read, ResourceType::Topic, "orders")
                .is_allowed());
        }
        // Exact principals only match themselves.
        let a = authorizer(vec![binding(Literal, "orders", BOB, Read, Allow)]);
        assert!(!may(&a, Read, "orders"));
        // "Group:*" is not a wildcard.
        let a = authorizer(vec![binding(Literal, "orders", "Group:*", Read, Allow)]);
        assert!(!a
            .authorize("Group:ops", HOST, Read, ResourceType::Topic, "orders")
            .is_allowed());
    }

    #[test]
    fn host_matching() {
        let from = |host: &str| AclBinding {
            host: host.to_owned(),
            ..alice(Literal, "orders", Read, Allow)
        };
        let a = authorizer(vec![from(HOST)]);
        assert!(a
            .authorize(ALICE, HOST, Read, ResourceType::Topic, "orders")
            .is_allowed());
        assert!(!a
            .authorize(ALICE, "10.0.0.2", Read, ResourceType::Topic, "orders")
            .is_allowed());
        let a = authorizer(vec![from(WILDCARD)]);
        assert!(a
            .authorize(ALICE, "10.0.0.2", Read, ResourceType::Topic, "orders")
            .is_allowed());
        // A deny from one host leaves the others allowed.
        let a = authorizer(vec![
            from(WILDCARD),
            AclBinding {
                permission: Deny,
                ..from("10.0.0.9")
            },
        ]);
        assert!(a
            .authorize(ALICE, HOST, Read, ResourceType::Topic, "orders")
            .is_allowed());
        assert!(!a
            .authorize(ALICE, "10.0.0.9", Read, ResourceType::Topic, "orders")
            .is_allowed());
    }

    #[test]
    fn allow_implies_describe_and_describe_configs() {
        for op in [Read, Write, Delete, Alter, Describe] {
            let a = authorizer(vec![alice(Literal, "t", op, Allow)]);
            assert!(may(&a, Describe, "t"), "{op} implies DESCRIBE");
        }
        for op in [
            Create,
            AlterConfigs,
            DescribeConfigs,
            ClusterAction,
            IdempotentWrite,
        ] {
            let a = authorizer(vec![alice(Literal, "t", op, Allow)]);
            assert!(!may(&a, Describe, "t"), "{op} does not imply DESCRIBE");
        }
        let a = authorizer(vec![alice(Literal, "t", AlterConfigs, Allow)]);
        assert!(may(&a, DescribeConfigs, "t"));
        assert!(!may(&a, Alter, "t"));
        let a = authorizer(vec![alice(Literal, "t", Alter, Allow)]);
        assert!(!may(&a, DescribeConfigs, "t"));
        // Implication only goes one way.
        let a = authorizer(vec![alice(Literal, "t", Describe, Allow)]);
        assert!(!may(&a, Read, "t"));
        let a = authorizer(vec![alice(Literal, "t", DescribeConfigs, Allow)]);
        assert!(!may(&a, AlterConfigs, "t"));
    }

    #[test]
    fn implication_is_for_allow_only() {
        // A DENY of DESCRIBE does not deny READ ...
        let a = authorizer(vec![
            alice(Literal, "t", Read, Allow),
            alice(Literal, "t", Describe, Deny),
        ]);
        assert!(may(&a, Read, "t"));
        assert!(!may(&a, Describe, "t"));
        // ... and a DENY of READ does not deny DESCRIBE.
        let a = authorizer(vec![
            alice(Literal, "t", Describe, Allow),
            alice(Literal, "t", Read, Deny),
        ]);
        assert!(may(&a, Describe, "t"));
        assert!(!may(&a, Read, "t"));
        // A DENY of ALTER_CONFIGS does not deny DESCRIBE_CONFIGS.
        let a = authorizer(vec![
            alice(Literal, "t", DescribeConfigs, Allow),
            alice(Literal, "t", AlterConfigs, Deny),
        ]);
        assert!(may(&a, DescribeConfigs, "t"));
    }

    #[test]
    fn all_allows_and_denies_everything() {
        let a = authorizer(vec![alice(Literal, "t", All, Allow)]);
        for &op in &AclOperation::VALUES[2..] {
            assert!(may(&a, op, "t"), "ALL allows {op}");
        }
        let a = authorizer(vec![
            alice(Literal, WILDCARD, All, Allow),
            alice(Prefixed, "t", All, Deny),
        ]);
        for &op in &AclOperation::VALUES[2..] {
            assert!(!may(&a, op, "t"), "ALL denies {op}");
            assert!(may(&a, op, "u"));
        }
    }

    #[test]
    fn super_users_may_do_anything() {
        let a = authorizer(vec![binding(
            Literal,
            WILDCARD,
            WILDCARD_PRINCIPAL,
            All,
            Deny,
        )]);
        assert_eq!(
            a.authorize(ADMIN, HOST, Write, ResourceType::Topic, "t"),
            Decision::Allowed(Reason::SuperUser)
        );
        assert!(a
            .authorize(
                ADMIN,
                HOST,
                ClusterAction,
                ResourceType::Cluster,
                CLUSTER_NAME
            )
            .is_allowed());
        assert!(!may(&a, Write, "t"));
        assert_eq!(a.super_users(), [ADMIN.to_owned()]);
    }

    #[test]
    fn allow_everyone_only_when_no_acl_applies_to_the_resource() {
        let open = |bindings| Authorizer::new(bindings, Vec::new(), true);
        let a = open(vec![]);
        assert!(a.allow_everyone_if_no_acl_found());
        assert_eq!(
            a.authorize(ALICE, HOST, Write, ResourceType::Topic, "t"),
            Decision::Allowed(Reason::NoAclFound)
        );
        // An ACL for another principal on the topic closes it.
        let a = open(vec![binding(Literal, "t", BOB, Read, Allow)]);
        assert_eq!(
            a.authorize(ALICE, HOST, Read, ResourceType::Topic, "t"),
            Decision::Denied(Reason::NoMatchingAllow)
        );
        // So does one for another operation, or via a prefix or the wildcard.
        for acl in [
            alice(Literal, "t", Write, Allow),
            binding(Prefixed, "t", BOB, Read, Allow),
            binding(Literal, WILDCARD, BOB, Read, Allow),
        ] {
            assert!(!open(vec![acl])
                .authorize(ALICE, HOST, Read, ResourceType::Topic, "t")
                .is_allowed());
        }
        // ACLs elsewhere do not.
        let a = open(vec![
            binding(Literal, "other", BOB, Read, Allow),
            binding(Literal, "tt", BOB, Read, Allow),
            binding(Prefixed, "tx", BOB, Read, Allow),
        ]);
        assert!(may(&a, Read, "t"));
        assert!(!may(&a, Read, "tt"));
        // Without the setting, no ACL means denied.
        let a = authorizer(vec![]);
        assert_eq!(
            a.authorize(ALICE, HOST, Read, ResourceType::Topic, "t"),
            Decision::Denied(Reason::NoAclFound)
        );
    }

    #[test]
    fn reasons_name_the_binding() {
        let allow = alice(Prefixed, "t", Read, Allow);
        let a = authorizer(vec![allow.clone()]);
        let decision = a.authorize(ALICE, HOST, Describe, ResourceType::Topic, "topic");
        assert_eq!(
            decision,
            Decision::Allowed(Reason::AllowAcl(Arc::new(allow)))
        );
        assert_eq!(
            decision.to_string(),
            "Allowed (ACL (pattern=ResourcePattern(resourceType=TOPIC, name=t, \
             patternType=PREFIXED), entry=(principal=User:alice, host=*, operation=READ, \
             permissionType=ALLOW)))"
        );
        let denied = a.authorize(ALICE, HOST, Write, ResourceType::Topic, "topic");
        assert_eq!(denied.reason(), &Reason::NoMatchingAllow);
        assert_eq!(denied.to_string(), "Denied (no ACL allows the operation)");
    }

    #[test]
    fn prefixes_with_multibyte_names() {
        let a = authorizer(vec![
            alice(Prefixed, "é", Read, Allow),
            alice(Prefixed, "a", Read, Allow),
            alice(Prefixed, "日本", Write, Allow),
        ]);
        assert!(may(&a, Read, "éa"));
        assert!(may(&a, Read, "a日本"));
        assert!(may(&a, Write, "日本語"));
        assert!(!may(&a, Write, "日"));
        assert!(!may(&a, Read, "日本語"));
    }

    #[test]
    fn bindings_are_deduplicated_sorted_and_counted() {
        let mut group = alice(Literal, "g", Read, Allow);
        group.resource_type = ResourceType::Group;
        let mut match_pattern = alice(Literal, "x", Read, Allow);
        match_pattern.pattern_type = Match;
        let a = authorizer(vec![
            alice(Prefixed, "b", Read, Allow),
            alice(Literal, "a", Read, Allow),
            alice(Literal, "a", Read, Allow),
            group.clone(),
            match_pattern,
        ]);
        assert_eq!(a.len(), 3);
        assert!(!a.is_empty());
        assert!(authorizer(vec![]).is_empty());
        assert_eq!(a.len_of_type(ResourceType::Topic), 2);
        assert_eq!(a.len_of_type(ResourceType::Group), 1);
        assert_eq!(a.len_of_type(ResourceType::Cluster), 0);
        let names: Vec<&str> = a.bindings().map(|b| b.resource_name.as_str()).collect();
        assert_eq!(names, ["a", "b", "g"]);
        let groups = AclBindingFilter {
            resource_type: ResourceType::Group,
            ..AclBindingFilter::any()
        };
        assert_eq!(a.acls(&groups).collect::<Vec<_>>(), [&group]);
    }

    // ---- authorize_any_of_type (KIP-679) ----

    #[test]
    fn any_of_type_super_users_and_defaults() {
        let closed = authorizer(vec![]);
        assert!(!may_any(&closed, Read));
        assert!(closed.authorize_any_of_type(ADMIN, HOST, Read, ResourceType::Topic));
        let open = Authorizer::new(Vec::new(), Vec::new(), true);
        assert!(may_any(&open, Read));
        // Filter values are refused.
        assert!(!may_any(&open, AclOperation::Any));
        assert!(!open.authorize_any_of_type(ALICE, HOST, Read, ResourceType::Any));
        assert!(!closed.authorize_any_of_type(
            ADMIN,
            HOST,
            AclOperation::Unknown,
            ResourceType::Topic
        ));
    }

    #[test]
    fn any_of_type_allow_everyone_unless_denied_everywhere() {
        // Kafka's testAuthorizeByResourceTypeEnableAllowEveryOne.
        let deny_all = |name: &str| binding(Literal, name, WILDCARD_PRINCIPAL, All, Deny);
        let open = |bindings| Authorizer::new(bindings, Vec::new(), true);
        assert!(may_any(&open(vec![deny_all("t")]), Read));
        assert!(!may_any(
            &open(vec![deny_all("t"), deny_all(WILDCARD)]),
            Read
        ));
        // An ACL for someone else on every name closes every name.
        let a = open(vec![binding(Literal, WILDCARD, BOB, Read, Allow)]);
        assert!(!may_any(&a, Read));
    }

    #[test]
    fn any_of_type_deny_takes_precedence() {
        let allow = alice(Literal, "t", Read, Allow);
        assert!(may_any(&authorizer(vec![allow.clone()]), Read));
        let a = authorizer(vec![allow.clone(), alice(Literal, "t", Read, Deny)]);
        assert!(!may_any(&a, Read));
        // A deny on another name does not dominate.
        let a = authorizer(vec![allow.clone(), alice(Literal, "u", Read, Deny)]);
        assert!(may_any(&a, Read));
        let a = authorizer(vec![allow, alice(Prefixed, "u", Read, Deny)]);
        assert!(may_any(&a, Read));
    }

    #[test]
    fn any_of_type_literal_deny_does_not_dominate_prefixed_allow() {
        let a = authorizer(vec![
            alice(Prefixed, "foo", Read, Allow),
            alice(Literal, "foo", Read, Deny),
        ]);
        assert!(may_any(&a, Read));
        // A prefixed deny of the same prefix does.
        let a = authorizer(vec![
            alice(Prefixed, "foo", Read, Allow),
            alice(Prefixed, "foo", Read, Deny),
        ]);
        assert!(!may_any(&a, Read));
        // And a prefixed deny dominates a literal allow under it.
        let a = authorizer(vec![
            alice(Literal, "foobar", Read, Allow),
            alice(Prefixed, "foo", Read, Deny),
        ]);
        assert!(!may_any(&a, Read));
        // But not a literal allow beside it.
        let a = authorizer(vec![
            alice(Literal, "fob", Read, Allow),
            alice(Prefixed, "foo", Read, Deny),
        ]);
        assert!(may_any(&a, Read));
    }

    #[test]
    fn any_of_type_prefixed_deny_dominates() {
        // Kafka's testAuthorizeByResourceTypePrefixedResourceDenyDominate.
        let steps = [
            (alice(Prefixed, "abcde", Read, Allow), true),
            (alice(Prefixed, "abcd", Read, Deny), false),
            (alice(Prefixed, "abc", Read, Allow), true),
            (alice(Prefixed, "a", Read, Deny), false),
            (alice(Prefixed, "ab", Read, Allow), false),
        ];
        let mut bindings = Vec::new();
        for (acl, expected) in steps {
            bindings.push(acl);
            assert_eq!(may_any(&authorizer(bindings.clone()), Read), expected);
        }
    }

    #[test]
    fn any_of_type_wildcard_deny_dominates() {
        // Kafka's testAuthorizeByResourceTypeWildcardResourceDenyDominate.
        let steps = [
            (alice(Literal, WILDCARD, Read, Allow), true),
            (alice(Prefixed, "hello", Read, Allow), true),
            (alice(Literal, "aloha", Read, Deny), true),
            (alice(Literal, WILDCARD, Read, Deny), false),
        ];
        let mut bindings = Vec::new();
        for (acl, expected) in steps {
            bindings.push(acl);
            assert_eq!(may_any(&authorizer(bindings.clone()), Read), expected);
        }
    }

    #[test]
    fn any_of_type_operation_principal_and_host() {
        // ALL counts as the operation, for allow and for deny.
        assert!(may_any(
            &authorizer(vec![alice(Literal, "t", All, Allow)]),
            Write
        ));
        let a = authorizer(vec![
            alice(Literal, "t", Write, Allow),
            alice(Prefixed, "t", All, Deny),
        ]);
        assert!(!may_any(&a, Write));
        // Other operations do not count; the scan does not use implication ...
        let a = authorizer(vec![alice(Literal, "t", Read, Allow)]);
        assert!(!may_any(&a, Write));
        assert!(!may_any(&a, Describe));
        // ... but a wildcard ALLOW does, as Kafka's first check authorizes a made-up name.
        let a = authorizer(vec![alice(Literal, WILDCARD, Read, Allow)]);
        assert!(may_any(&a, Describe));
        // The wildcard principal counts, other principals and hosts do not.
        let a = authorizer(vec![binding(Literal, "t", WILDCARD_PRINCIPAL, Read, Allow)]);
        assert!(may_any(&a, Read));
        let a = authorizer(vec![binding(Literal, "t", BOB, Read, Allow)]);
        assert!(!may_any(&a, Read));
        let a = authorizer(vec![AclBinding {
            host: "10.0.0.2".to_owned(),
            ..alice(Literal, "t", Read, Allow)
        }]);
        assert!(!may_any(&a, Read));
        // A deny for someone else does not dominate.
        let a = authorizer(vec![
            alice(Literal, "t", Read, Allow),
            binding(Prefixed, "t", BOB, Read, Deny),
        ]);
        assert!(may_any(&a, Read));
    }

    #[test]
    fn any_of_type_ignores_other_resource_types() {
        // Kafka's testAuthorizeByResourceTypeIsolationUnrelatedDenyWontDominateAllow.
        let mut group_deny = alice(Prefixed, "s", Read, Deny);
        group_deny.resource_type = ResourceType::Group;
        let a = authorizer(vec![
            alice(Literal, "sb1", Read, Allow),
            alice(Literal, "sb2", Read, Deny),
            group_deny,
        ]);
        assert!(may_any(&a, Read));
        assert!(!a.authorize_any_of_type(ALICE, HOST, Read, ResourceType::Group));
        assert!(!a.authorize_any_of_type(ALICE, HOST, Read, ResourceType::TransactionalId));
    }

    // ---- performance ----

    #[test]
    fn authorize_is_fast_with_many_bindings() {
        const TOPICS: usize = 10_000;
        let mut bindings: Vec<AclBinding> = (0..TOPICS)
            .map(|i| {
                binding(
                    Literal,
                    &format!("topic-{i}"),
                    &format!("User:user-{}", i % 100),
                    if i % 2 == 0 { Read } else { Write },
                    Allow,
                )
            })
            .collect();
        bindings.truncate(TOPICS - 20);
        for p in ["topic-1", "topic-2", "team-", "t", "topic-99"] {
            bindings.push(binding(Prefixed, p, "User:user-7", Describe, Allow));
        }
        for i in 0..15 {
            bindings.push(binding(
                Literal,
                WILDCARD,
                &format!("User:ops-{i}"),
                Read,
                Allow,
            ));
        }
        assert_eq!(bindings.len(), TOPICS);
        let a = Authorizer::new(bindings, vec![ADMIN.to_owned()], false);
        assert_eq!(a.len(), TOPICS);

        let names: Vec<String> = (0..TOPICS).map(|i| format!("topic-{i}")).collect();
        let principals: Vec<String> = (0..100).map(|i| format!("User:user-{i}")).collect();
        let start = std::time::Instant::now();
        let mut allowed = 0;
        for call in 0..100_000 {
            let topic = call % TOPICS;
            let principal = &principals[topic % 100];
            if a.authorize(principal, HOST, Read, ResourceType::Topic, &names[topic])
                .is_allowed()
            {
                allowed += 1;
            }
        }
        let elapsed = start.elapsed();
        println!("100,000 authorize calls over {TOPICS} bindings: {elapsed:?}");
        // Even topics allow READ to their user, except the 20 bindings cut off (10 even).
        assert_eq!(allowed, 10 * (TOPICS / 2 - 10));
    }
}
