//! What one caller or one guest may use of a silo: sizes, depths and rates,
//! each with a default a single-machine user can live with. Exceeding one
//! fails that one call or turn with a message naming the limit, and nothing
//! else.

/// Every limit, by the name `--limit NAME=VALUE` and the `[limits]` table
/// of the config file use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in an object id (`object-id-bytes`).
    pub object_id_bytes: usize,
    /// Bytes in a service type name (`service-type-bytes`).
    pub service_type_bytes: usize,
    /// Bytes in a message type (`message-type-bytes`): errors name the
    /// type, so this also bounds what an error echoes back.
    pub message_type_bytes: usize,
    /// Bytes in one state key (`key-bytes`).
    pub key_bytes: usize,
    /// Bytes in one state value (`value-bytes`).
    pub value_bytes: usize,
    /// Bytes of keys and values one turn may leave pending for its commit
    /// (`turn-write-bytes`): what a turn can make the silo hold and write.
    pub turn_write_bytes: usize,
    /// Bytes of keys and values one object may keep (`object-state-bytes`).
    pub object_state_bytes: usize,
    /// Turns waiting on each other in one call chain, the first caller
    /// included (`call-depth`).
    pub call_depth: usize,
    /// Calls one turn may make (`calls-per-turn`).
    pub calls_per_turn: usize,
    /// Bytes of one guest log line; the rest is cut (`log-line-bytes`).
    pub log_line_bytes: usize,
    /// Log lines one activation may write per second; the excess is dropped
    /// and counted (`log-lines-per-second`).
    pub log_lines_per_second: usize,
    /// Bytes of one call's payload, and of one reply's (`payload-bytes`):
    /// clients and the silo's peers accept replies this big, so raise it on
    /// every silo of a cluster and in clients together.
    pub payload_bytes: usize,
    /// Bytes of the reply of a call made with an idempotency key
    /// (`keyed-reply-bytes`): the reply is stored with the turn's writes for
    /// the retention period, so a bigger one stops the turn (its writes are
    /// discarded) rather than be kept, or answered and not kept, which
    /// would let a retry apply the call twice.
    pub keyed_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        const MIB: usize = 1024 * 1024;
        Limits {
            // MySQL keys index object ids up to 255 characters: the same
            // limit on every backend keeps an id valid everywhere.
            object_id_bytes: 255,
            service_type_bytes: 128,
            message_type_bytes: 1024,
            key_bytes: 1024,
            value_bytes: 16 * MIB,
            turn_write_bytes: 64 * MIB,
            object_state_bytes: 1024 * MIB,
            call_depth: 32,
            calls_per_turn: 1000,
            log_line_bytes: 4096,
            log_lines_per_second: 100,
            payload_bytes: rio_protocol::DEFAULT_MAX_PAYLOAD_BYTES,
            keyed_reply_bytes: MIB,
        }
    }
}

impl Limits {
    /// The names of every limit, as `set` takes them.
    pub const NAMES: [&'static str; 13] = [
        "object-id-bytes",
        "service-type-bytes",
        "message-type-bytes",
        "key-bytes",
        "value-bytes",
        "turn-write-bytes",
        "object-state-bytes",
        "call-depth",
        "calls-per-turn",
        "log-line-bytes",
        "log-lines-per-second",
        "payload-bytes",
        "keyed-reply-bytes",
    ];

    /// Sets the limit called `name` (see [`Limits::NAMES`]).
    pub fn set(&mut self, name: &str, value: usize) -> Result<(), UnknownLimit> {
        let field = match name {
            "object-id-bytes" => &mut self.object_id_bytes,
            "service-type-bytes" => &mut self.service_type_bytes,
            "message-type-bytes" => &mut self.message_type_bytes,
            "key-bytes" => &mut self.key_bytes,
            "value-bytes" => &mut self.value_bytes,
            "turn-write-bytes" => &mut self.turn_write_bytes,
            "object-state-bytes" => &mut self.object_state_bytes,
            "call-depth" => &mut self.call_depth,
            "calls-per-turn" => &mut self.calls_per_turn,
            "log-line-bytes" => &mut self.log_line_bytes,
            "log-lines-per-second" => &mut self.log_lines_per_second,
            "payload-bytes" => &mut self.payload_bytes,
            "keyed-reply-bytes" => &mut self.keyed_reply_bytes,
            _ => return Err(UnknownLimit(name.to_string())),
        };
        *field = value;
        Ok(())
    }

    /// Refuses a message type longer than `message-type-bytes`, without
    /// echoing it; `to` names the receiver.
    pub(crate) fn check_message_type(
        &self,
        message_type: &str,
        to: &super::ObjectKey,
    ) -> Result<(), String> {
        let (size, limit) = (message_type.len(), self.message_type_bytes);
        if size > limit {
            return Err(format!(
                "the message type sent to {to} is {size} bytes, over the silo's limit `message-type-bytes` of {limit} bytes"
            ));
        }
        Ok(())
    }
}

/// A limit name that [`Limits::set`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown limit `{0}`: expected one of {names}", names = Limits::NAMES.join(", "))]
pub struct UnknownLimit(pub String);

/// A guest went past a limit in a turn: the turn is stopped there (its
/// writes discarded, its instance dropped), and its caller is told which.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} would be {size} bytes, over the silo's limit `{name}` of {limit} bytes")]
pub(crate) struct LimitExceeded {
    pub(crate) what: &'static str,
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    pub(crate) limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_sets_its_own_limit() {
        for (i, name) in Limits::NAMES.iter().enumerate() {
            let mut limits = Limits::default();
            limits.set(name, 7 + i).unwrap();
            assert_ne!(limits, Limits::default(), "{name} changed nothing");
        }
        let error = Limits::default().set("bogus", 1).unwrap_err();
        assert!(error.to_string().contains("call-depth"), "{error}");
    }
}
