//! Who may ask a silo what: the tokens it accepts and the scope each
//! grants.
//!
//! Invariants:
//! - A silo configured with no token at all serves everyone everything (the
//!   loopback default); `rio silo` refuses to listen elsewhere that way
//!   unless told `--allow-unauthenticated`.
//! - Scopes nest: the cluster secret allows everything (peers forward calls
//!   and ask for members), the admin token everything but silo-to-silo
//!   requests, a call token calls and the list of deployments.
//! - Tokens are compared in constant time (as SHA-256 digests) and never
//!   printed: [`Secret`]'s `Debug` hides it.
//! - Tokens rotate without a restart (`LiveAuth::rotate`): a scope may hold
//!   several tokens while clients move from the old to the new, and a
//!   rotation applies to hellos after it; connections keep the credential
//!   theirs proved. A rotation neither adds nor removes a scope (whether a
//!   silo requires tokens at all is decided at its start).

use std::sync::{Arc, RwLock};

use rio_protocol::{ReplyError, Request};
use sha2::{Digest, Sha256};

/// A token or secret; its `Debug` never shows it. It may hold several
/// tokens, all accepted, during a rotation; the first is the one a silo
/// presents to its peers.
#[derive(Clone)]
pub struct Secret(Vec<String>);

impl Secret {
    /// Wraps `text`; `None` if it is empty (an empty token would match a
    /// client that sends an empty one).
    pub fn new(text: impl Into<String>) -> Option<Secret> {
        let text = text.into();
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        (!text.is_empty()).then_some(Secret(vec![text]))
    }

    /// Several tokens accepted alike, e.g. the lines of a token file while
    /// it is rotated; the first is presented to peers. `None` if there is
    /// none (empty ones are left out).
    pub fn accepting(tokens: impl IntoIterator<Item = String>) -> Option<Secret> {
        let tokens: Vec<String> = tokens
            .into_iter()
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty())
            .collect();
        (!tokens.is_empty()).then_some(Secret(tokens))
    }

    /// The token itself (the first), for a silo to present to its peers.
    pub fn expose(&self) -> &str {
        &self.0[0]
    }

    /// Whether `given` is one of the tokens.
    fn matches(&self, given: &str) -> bool {
        // Every token is compared, and digests have one length whatever the
        // inputs, so comparing them byte by byte without stopping early
        // leaks nothing of the tokens.
        let given = Sha256::digest(given.as_bytes());
        self.0.iter().fold(false, |found, token| {
            let expected = Sha256::digest(token.as_bytes());
            let same = expected
                .iter()
                .zip(given.iter())
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0;
            found | same
        })
    }

    /// Whether this and `other` share a token.
    fn overlaps(&self, other: &Secret) -> bool {
        other.0.iter().any(|token| self.matches(token))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// The shortest token or secret a silo accepts, in bytes (white space at
/// its ends not counted): 16 random bytes, or 32 hex digits, cannot be
/// guessed at any rate a network allows.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The longest token accepted: it must fit in a hello, which the silo reads
/// with a small frame limit of its own (16 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The tokens a silo accepts. All `None` (the default): no authentication.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Allows calls, sends and listing the deployments.
    pub call_token: Option<Secret>,
    /// Allows what a call token does, and deploy, undeploy, stats, members
    /// and dead letters.
    pub admin_token: Option<Secret>,
    /// Shared by the silos of a cluster: allows everything, including the
    /// silo-to-silo requests (forward, ping, wait reports).
    pub cluster_secret: Option<Secret>,
}

/// The tokens a running silo accepts now, replaced whole by a rotation.
pub(crate) struct LiveAuth(RwLock<Arc<AuthConfig>>);

impl LiveAuth {
    pub(crate) fn new(auth: AuthConfig) -> Arc<LiveAuth> {
        Arc::new(LiveAuth(RwLock::new(Arc::new(auth))))
    }

    /// The tokens accepted now.
    pub(crate) fn current(&self) -> Arc<AuthConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Accepts `auth`'s tokens from now on, if they are strong and name the
    /// same scopes as before; otherwise nothing changes.
    pub(crate) fn rotate(&self, auth: AuthConfig) -> Result<(), super::ConfigError> {
        auth.check_strength()?;
        let scopes = |auth: &AuthConfig| {
            [
                auth.call_token.is_some(),
                auth.admin_token.is_some(),
                auth.cluster_secret.is_some(),
            ]
        };
        if scopes(&self.current()) != scopes(&auth) {
            return Err(super::ConfigError::WeakToken(
                "a rotation replaces tokens but cannot add or remove a scope (call token, admin \
                 token, cluster secret); restart the silo for that"
                    .into(),
            ));
        }
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(auth);
        Ok(())
    }
}

/// What a connection proved at its hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    Anonymous,
    Call,
    Admin,
    Cluster,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Call,
    Admin,
    Cluster,
}

impl AuthConfig {
    /// Refuses a token shorter than [`MIN_TOKEN_BYTES`], and one string given
    /// for two scopes (the narrower scope would then grant the wider one).
    pub fn check_strength(&self) -> Result<(), super::ConfigError> {
        let scopes = [
            ("call token", "--call-token", &self.call_token),
            ("admin token", "--admin-token", &self.admin_token),
            ("cluster secret", "--cluster-secret", &self.cluster_secret),
        ];
        let weak = |message: String| Err(super::ConfigError::WeakToken(message));
        for (what, flag, secret) in scopes {
            let Some(secret) = secret else { continue };
            for token in &secret.0 {
                let length = token.trim().len();
                if length < MIN_TOKEN_BYTES {
                    return weak(format!(
                        "the {what} ({flag}) is {length} bytes; tokens must be at least {MIN_TOKEN_BYTES} \
                         (e.g. 32 hex digits from `openssl rand -hex 16`)"
                    ));
                }
                if token.len() > MAX_TOKEN_BYTES {
                    return weak(format!(
                        "the {what} ({flag}) is {} bytes; tokens may be at most {MAX_TOKEN_BYTES}",
                        token.len()
                    ));
                }
            }
        }
        for (index, (what, _, secret)) in scopes.iter().enumerate() {
            for (other, _, later) in &scopes[index + 1..] {
                if let (Some(secret), Some(later)) = (secret, later)
                    && secret.overlaps(later)
                {
                    return weak(format!(
                        "the {what} and the {other} are the same; each scope needs a token of its own"
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when clients need a token (a call or admin token is set).
    pub fn requires_client_tokens(&self) -> bool {
        self.call_token.is_some() || self.admin_token.is_some()
    }

    /// Which credential a hello's `token` proves; `Err` is the reason the
    /// connection is refused.
    pub(crate) fn credential(&self, token: Option<&str>) -> Result<Credential, String> {
        let Some(token) = token else {
            return if self.requires_client_tokens() {
                Err("this silo requires a token (rio: --token, --token-file or RIO_TOKEN)".into())
            } else {
                Ok(Credential::Anonymous)
            };
        };
        let matching = [
            (&self.cluster_secret, Credential::Cluster),
            (&self.admin_token, Credential::Admin),
            (&self.call_token, Credential::Call),
        ];
        for (secret, credential) in matching {
            if secret.as_ref().is_some_and(|secret| secret.matches(token)) {
                return Ok(credential);
            }
        }
        if self.requires_client_tokens() || self.cluster_secret.is_some() {
            Err("the token is not one this silo accepts".into())
        } else {
            // A silo without tokens ignores one sent by a client configured
            // for another silo.
            Ok(Credential::Anonymous)
        }
    }

    /// Whether a connection holding `credential` may make `request`.
    pub(crate) fn check(
        &self,
        credential: Credential,
        request: &Request,
    ) -> Result<(), ReplyError> {
        let scope = scope_of(request);
        let allowed = match scope {
            Scope::Cluster => {
                credential == Credential::Cluster
                    || (self.cluster_secret.is_none() && !self.requires_client_tokens())
            }
            Scope::Admin => {
                matches!(credential, Credential::Admin | Credential::Cluster)
                    || !self.requires_client_tokens()
            }
            Scope::Call => credential != Credential::Anonymous || !self.requires_client_tokens(),
        };
        if allowed {
            return Ok(());
        }
        let what = request_name(request);
        Err(ReplyError::Unauthorized(match scope {
            Scope::Cluster => {
                format!("`{what}` is for the silos of the cluster: it needs the cluster secret")
            }
            Scope::Admin if self.admin_token.is_none() => format!(
                "`{what}` needs the admin token, and this silo has none configured (start it with --admin-token)"
            ),
            Scope::Admin => format!("`{what}` needs the admin token"),
            Scope::Call => format!("`{what}` needs a call token"),
        }))
    }
}

fn scope_of(request: &Request) -> Scope {
    match request {
        Request::Call(_)
        | Request::RoutedCall(_)
        | Request::ListDeployments
        | Request::OpenApi { .. }
        | Request::Subscribe { .. }
        | Request::Unsubscribe { .. } => Scope::Call,
        Request::Deploy { .. }
        | Request::Undeploy { .. }
        | Request::Stats
        | Request::Metrics
        | Request::Members
        | Request::DeadLetters { .. }
        | Request::Reminders { .. } => Scope::Admin,
        Request::Forward(_) | Request::Ping | Request::Waits(_) | Request::Publish { .. } => {
            Scope::Cluster
        }
    }
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Call(_) => "call",
        Request::RoutedCall(_) => "routed call",
        Request::ListDeployments => "deployments",
        Request::OpenApi { .. } => "openapi",
        Request::Deploy { .. } => "deploy",
        Request::Undeploy { .. } => "undeploy",
        Request::Stats => "stats",
        Request::Metrics => "metrics",
        Request::Members => "members",
        Request::DeadLetters { .. } => "dead-letters",
        Request::Reminders { .. } => "reminders",
        Request::Subscribe { .. } => "subscribe",
        Request::Unsubscribe { .. } => "unsubscribe",
        Request::Publish { .. } => "publish",
        Request::Forward(_) => "forward",
        Request::Ping => "ping",
        Request::Waits(_) => "waits",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Option<Secret> {
        Secret::new(text)
    }

    #[test]
    fn short_tokens_and_one_token_for_two_scopes_are_refused() {
        let strong = |seed: char| secret(&seed.to_string().repeat(MIN_TOKEN_BYTES));
        let auth = |call, admin, cluster| AuthConfig {
            call_token: call,
            admin_token: admin,
            cluster_secret: cluster,
        };
        assert!(auth(None, None, None).check_strength().is_ok());
        assert!(
            auth(strong('c'), strong('a'), strong('s'))
                .check_strength()
                .is_ok()
        );
        let refused = |config: AuthConfig, needle: &str| match config.check_strength() {
            Err(error) => assert!(error.to_string().contains(needle), "{error}"),
            Ok(()) => panic!("accepted, expected {needle:?}"),
        };
        refused(
            auth(secret("x"), None, None),
            "call token (--call-token) is 1 bytes",
        );
        refused(auth(None, secret(" "), None), "admin token");
        let padded = format!("  {}  ", "p".repeat(MIN_TOKEN_BYTES - 1));
        refused(auth(None, None, secret(&padded)), "cluster secret");
        refused(
            auth(strong('c'), strong('c'), None),
            "call token and the admin token are the same",
        );
        refused(
            auth(None, strong('a'), strong('a')),
            "admin token and the cluster secret",
        );
        refused(
            auth(strong('s'), None, strong('s')),
            "call token and the cluster secret",
        );
    }

    fn deploy() -> Request {
        Request::Deploy {
            service_type: "Counter".into(),
            component: Vec::new(),
        }
    }

    #[test]
    fn without_tokens_everyone_may_ask_everything() {
        let auth = AuthConfig::default();
        let anyone = auth.credential(None).unwrap();
        for request in [
            Request::ListDeployments,
            deploy(),
            Request::Ping,
            Request::Stats,
        ] {
            assert!(auth.check(anyone, &request).is_ok());
        }
    }

    #[test]
    fn scopes_nest_call_admin_cluster() {
        let auth = AuthConfig {
            call_token: secret("c"),
            admin_token: secret("a"),
            cluster_secret: secret("s"),
        };
        assert!(auth.credential(None).is_err());
        assert!(auth.credential(Some("wrong")).is_err());
        let call = auth.credential(Some("c")).unwrap();
        let admin = auth.credential(Some("a")).unwrap();
        let cluster = auth.credential(Some("s")).unwrap();
        assert!(auth.check(call, &Request::ListDeployments).is_ok());
        let refused = auth.check(call, &deploy()).unwrap_err();
        assert_eq!(refused.kind(), "unauthorized");
        assert!(auth.check(admin, &deploy()).is_ok());
        assert!(auth.check(admin, &Request::Ping).is_err());
        assert!(auth.check(cluster, &Request::Ping).is_ok());
        assert!(auth.check(cluster, &deploy()).is_ok());
    }

    #[test]
    fn a_cluster_secret_alone_guards_only_silo_to_silo_requests() {
        let auth = AuthConfig {
            cluster_secret: secret("s"),
            ..AuthConfig::default()
        };
        let anyone = auth.credential(None).unwrap();
        assert!(auth.check(anyone, &deploy()).is_ok());
        assert!(auth.check(anyone, &Request::Ping).is_err());
        assert!(auth.credential(Some("wrong")).is_err());
    }

    #[test]
    fn a_call_token_alone_leaves_admin_requests_to_the_cluster_secret() {
        let auth = AuthConfig {
            call_token: secret("c"),
            ..AuthConfig::default()
        };
        let call = auth.credential(Some("c")).unwrap();
        let refused = auth.check(call, &deploy()).unwrap_err();
        assert!(refused.to_string().contains("--admin-token"), "{refused}");
    }

    #[test]
    fn a_rotation_accepts_old_and_new_tokens_and_keeps_its_scopes() {
        let old = "call-token-old-0123456789";
        let new = "call-token-new-0123456789";
        let live = LiveAuth::new(AuthConfig {
            call_token: secret(old),
            ..AuthConfig::default()
        });
        assert_eq!(live.current().credential(Some(old)), Ok(Credential::Call));
        let both = AuthConfig {
            call_token: Secret::accepting([new.to_string(), old.to_string()]),
            ..AuthConfig::default()
        };
        live.rotate(both).unwrap();
        assert_eq!(live.current().credential(Some(old)), Ok(Credential::Call));
        assert_eq!(live.current().credential(Some(new)), Ok(Credential::Call));
        assert_eq!(live.current().call_token.as_ref().unwrap().expose(), new);
        live.rotate(AuthConfig {
            call_token: secret(new),
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(
            live.current().credential(Some(old)).is_err(),
            "the old one is gone"
        );

        // Weak tokens, or another set of scopes, leave the tokens as they were.
        let weak = AuthConfig {
            call_token: Secret::accepting([new.to_string(), "short".to_string()]),
            ..AuthConfig::default()
        };
        assert!(live.rotate(weak).is_err());
        let more_scopes = AuthConfig {
            call_token: secret(new),
            admin_token: secret("admin-token-0123456789"),
            ..AuthConfig::default()
        };
        assert!(live.rotate(more_scopes).is_err());
        assert_eq!(live.current().credential(Some(new)), Ok(Credential::Call));
    }

    #[test]
    fn secrets_never_print_and_empty_ones_are_none() {
        let shown = format!("{:?}", Secret::new("hunter2").unwrap());
        assert!(!shown.contains("hunter2"));
        assert!(Secret::new("").is_none());
        assert!(Secret::new("\n").is_none());
        assert_eq!(Secret::new("abc\n").unwrap().expose(), "abc");
    }
}
