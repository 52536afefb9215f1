//! How a command that failed ends: one error kind per failure, the exit
//! code that tells it to a script, and the JSON that `--output json`
//! prints instead of prose (`{"error": {"kind", "message"}}`).
//!
//! The table (`EXIT_CODES`) is the README's; a code, once given to a
//! class of kinds, keeps it. What decides the class is whether anything
//! ran and whether a retry can help, since that is what a script does
//! next: `12` is the one class where the outcome is unknown (retry with the
//! same idempotency key).

use rio_client::ClientError;
use rio_protocol::ReplyError;
use rio_protocol::error::SHARED_KINDS;
use serde_json::json;

/// A mistake on the command line itself (not TYPE/ID, not JSON): nothing
/// was sent. Exit 2, as clap uses for arguments it rejects.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Exit codes by class of kind, in the order the README lists them, with
/// what each class means; a kind not listed exits 1.
pub(crate) const EXIT_CODES: &[(u8, &[&str], &str)] = &[
    (
        1,
        &[
            "internal",
            "invalid-component",
            "bad-data",
            "codec",
            "error",
        ],
        "anything else: a fault in the silo or the component",
    ),
    (2, &["usage"], "the command line is wrong; nothing was sent"),
    (
        3,
        &["unknown-type", "unknown-message"],
        "no such type or message; nothing ran",
    ),
    (
        4,
        &["bad-request"],
        "the silo refused the request as malformed; nothing ran",
    ),
    (
        5,
        &["unauthorized"],
        "the token is missing or wrong (refused at the hello), or does not allow this; nothing ran",
    ),
    (
        6,
        &["(the guest's own kind)"],
        "the handler returned an error; its writes were discarded",
    ),
    (7, &["trap"], "the guest trapped; its writes were discarded"),
    (
        8,
        &["deadlock", "cycle"],
        "refused to break a circle of calls; nothing committed, a retry may succeed",
    ),
    (
        9,
        &["overloaded"],
        "the silo cannot take it now; nothing ran, retry later",
    ),
    (
        10,
        &["timeout"],
        "the turn passed its deadline; its writes were discarded",
    ),
    (
        11,
        &["connect", "tls", "handshake"],
        "no session: the silo cannot be reached, did not answer the hello, or is not trusted; nothing was sent",
    ),
    (
        12,
        &["unavailable", "no-reply", "closed"],
        "it may or may not have run (the owner or its answer was lost, no answer in time, the connection broke)",
    ),
];

/// What a failed command reports: its kind, a message, and its exit code.
pub(crate) struct Outcome {
    pub(crate) kind: String,
    pub(crate) message: String,
    pub(crate) exit_code: u8,
}

impl Outcome {
    /// Classifies `error` by the first rio error in its chain of causes;
    /// an error of the command's own (a file it cannot read) is `error`.
    pub(crate) fn of(error: &anyhow::Error) -> Outcome {
        for cause in error.chain() {
            if let Some(usage) = cause.downcast_ref::<UsageError>() {
                return Outcome::classed("usage", usage.0.clone());
            }
            if let Some(reply) = cause.downcast_ref::<ReplyError>() {
                return Outcome::of_reply(reply);
            }
            if let Some(client) = cause.downcast_ref::<ClientError>() {
                return Outcome::of_client(client);
            }
        }
        Outcome::classed("error", format!("{error:#}"))
    }

    fn of_reply(error: &ReplyError) -> Outcome {
        match error {
            ReplyError::Guest { kind, message } if SHARED_KINDS.contains(&kind.as_str()) => {
                Outcome::classed(kind, message.clone())
            }
            // The handler's own word: only the guest knows what it means.
            ReplyError::Guest { kind, message } => Outcome::new(kind, message.clone(), 6),
            other => Outcome::classed(other.kind(), other.to_string()),
        }
    }

    fn of_client(error: &ClientError) -> Outcome {
        let kind = match error {
            ClientError::Reply(reply) => return Outcome::of_reply(reply),
            ClientError::Connect { .. } | ClientError::Socket { .. } | ClientError::NoAddress => {
                "connect"
            }
            ClientError::Tls(_) => "tls",
            // A hello unanswered or broken; one the silo refused for a
            // token or its connection cap is a `Reply` of that kind.
            ClientError::Handshake(_) => "handshake",
            ClientError::Timeout(_) => "no-reply",
            ClientError::Closed(_) => "closed",
            _ => "codec",
        };
        Outcome::classed(kind, error.to_string())
    }

    /// An outcome of one of the kinds `EXIT_CODES` lists.
    fn classed(kind: &str, message: String) -> Outcome {
        let exit_code = EXIT_CODES
            .iter()
            .find(|(_, kinds, _)| kinds.contains(&kind))
            .map_or(1, |(code, _, _)| *code);
        Outcome::new(kind, message, exit_code)
    }

    fn new(kind: &str, message: String, exit_code: u8) -> Outcome {
        Outcome {
            kind: kind.to_string(),
            message,
            exit_code,
        }
    }

    /// `{"error": {"kind", "message"}}`, as `--output json` prints it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({"error": {"kind": self.kind, "message": self.message}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_error_kind_has_the_code_the_table_gives_its_class() {
        let errors = [
            ReplyError::UnknownType {
                service_type: "T".into(),
            },
            ReplyError::UnknownMessage {
                service_type: "T".into(),
                message_type: "m".into(),
            },
            ReplyError::BadRequest("b".into()),
            ReplyError::Unauthorized("u".into()),
            ReplyError::Trap("t".into()),
            ReplyError::Deadlock("d".into()),
            ReplyError::Cycle("c".into()),
            ReplyError::Overloaded("o".into()),
            ReplyError::Unavailable("u".into()),
            ReplyError::Timeout("t".into()),
            ReplyError::InvalidComponent("i".into()),
            ReplyError::Internal("i".into()),
        ];
        for error in errors {
            let outcome = Outcome::of(&anyhow::Error::new(error.clone()));
            assert_eq!(outcome.kind, error.kind());
            let (code, kinds, _) = EXIT_CODES
                .iter()
                .find(|(_, kinds, _)| kinds.contains(&error.kind()))
                .unwrap_or_else(|| panic!("`{}` is not in the table", error.kind()));
            assert_eq!(outcome.exit_code, *code, "{kinds:?}");
        }
    }

    #[test]
    fn a_guest_error_keeps_its_own_kind_and_exits_6_unless_it_passes_on_a_shared_one() {
        let guest = |kind: &str| {
            let error = ReplyError::Guest {
                kind: kind.into(),
                message: "from the handler".into(),
            };
            let outcome = Outcome::of(&anyhow::Error::new(ClientError::Reply(error)));
            assert_eq!(outcome.message, "from the handler");
            (outcome.kind, outcome.exit_code)
        };
        assert_eq!(
            guest("insufficient-funds"),
            ("insufficient-funds".into(), 6)
        );
        // A callee's deadlock or lost answer, passed on by the handler, is
        // what a script retries like the silo's own.
        assert_eq!(guest("deadlock"), ("deadlock".into(), 8));
        assert_eq!(guest("unavailable"), ("unavailable".into(), 12));
        assert_eq!(guest("bad-request"), ("bad-request".into(), 4));
        // The command's own words are not the guests' to borrow.
        assert_eq!(guest("usage"), ("usage".into(), 6));
        assert_eq!(guest("no-reply"), ("no-reply".into(), 6));
    }

    #[test]
    fn causes_under_context_are_found_and_unknown_errors_exit_1() {
        let wrapped =
            anyhow::Error::new(UsageError("`x` is not TYPE/ID".into())).context("cannot call");
        assert_eq!(Outcome::of(&wrapped).exit_code, 2);
        let other = anyhow::anyhow!("cannot read the token file");
        let outcome = Outcome::of(&other);
        assert_eq!((outcome.kind.as_str(), outcome.exit_code), ("error", 1));
        assert_eq!(
            outcome.to_json(),
            json!({"error": {"kind": "error", "message": "cannot read the token file"}})
        );
    }

    #[test]
    fn the_readme_table_gives_every_code_the_kinds_given_here() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("### From scripts")
            .nth(1)
            .expect("the README has its section");
        for (code, kinds, _) in EXIT_CODES {
            let row = section
                .lines()
                .find(|line| line.starts_with(&format!("| {code} |")))
                .unwrap_or_else(|| panic!("no README row for exit {code}"));
            for kind in kinds.iter().filter(|kind| !kind.starts_with('(')) {
                assert!(
                    row.contains(&format!("`{kind}`")),
                    "exit {code}: `{kind}` in {row}"
                );
            }
        }
    }
}
