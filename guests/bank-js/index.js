// A bank account in JavaScript with the messages and CBOR shapes of the Rust
// `examples/bank` (deploy it under any type name, e.g. `JsAccount`):
//
// - `deposit {"amount": n}`, `withdraw {"amount": n}` and `balance` answer
//   `{"balance": n}`;
// - `transfer {"to": id, "amount": n, "to_type": type?}` withdraws, then
//   calls `deposit` on `to_type/to` (default: this account's own type), so
//   accounts in Rust, Python and JS can pay each other. If that call fails,
//   its error is thrown on: the turn fails and its withdrawal is discarded;
// - `pay {"to", "amount", "fee", "fee_to", "to_type"?, "fee_to_type"?}`
//   withdraws `amount + fee`, then calls `deposit` on the payee and on the
//   fee account: two calls in one turn;
// - `transfer-send` (same message and reply) withdraws and `send`s the
//   deposit one way: stored with the withdrawal, delivered exactly once after.
//
// Errors: `invalid-amount`, `insufficient-funds`, `invalid-transfer`, or the
// other account's error. Build it with `rio build guests/bank-js`.

import { RioError, call, identity, send, service, state } from "rio-sdk";

const amount = { amount: "int" };

function positive(value) {
  if (value <= 0) throw new RioError("invalid-amount", `amount must be positive, got ${value}`);
  return value;
}

function setBalance(balance) {
  state.save("balance", balance);
  return { balance };
}

function withdraw({ amount: value }) {
  const wanted = positive(value);
  const balance = state.load("balance", 0);
  if (wanted > balance) {
    throw new RioError("insufficient-funds", `balance ${balance} is less than ${wanted}`);
  }
  return setBalance(balance - wanted);
}

export default service({
  deposit: {
    message: amount,
    handle({ amount: value }) {
      const balance = state.load("balance", 0) + positive(value);
      // Past 2^53 a JS number loses units; the Rust account's i64 limit is
      // further, but a balance this account cannot hold exactly is refused.
      if (!Number.isSafeInteger(balance)) throw new RioError("invalid-amount", "the balance would overflow");
      return setBalance(balance);
    },
  },

  withdraw: { message: amount, handle: withdraw },

  balance: () => ({ balance: state.load("balance", 0) }),

  transfer: {
    message: { to: "string", amount: "int", to_type: "string?" },
    handle({ to, amount: value, to_type: toType }) {
      const target = receiverType(to, toType);
      const remaining = withdraw({ amount: value });
      // A failed deposit throws RioError with the other account's kind;
      // not catching it discards the withdrawal above.
      call(target, to, "deposit", { amount: value });
      return remaining;
    },
  },

  pay: {
    message: {
      to: "string",
      amount: "int",
      fee: "int",
      fee_to: "string",
      to_type: "string?",
      fee_to_type: "string?",
    },
    handle({ to, amount: value, fee, fee_to: feeTo, to_type: toType, fee_to_type: feeType }) {
      const ownType = identity.serviceType();
      const payee = toType ?? ownType;
      const feeAccount = feeType ?? ownType;
      const me = identity.objectId();
      if ((payee === ownType && to === me) || (feeAccount === ownType && feeTo === me)) {
        throw new RioError("invalid-transfer", "cannot pay this very account");
      }
      const remaining = withdraw({ amount: positive(value) + positive(fee) });
      call(payee, to, "deposit", { amount: value });
      call(feeAccount, feeTo, "deposit", { amount: fee });
      return remaining;
    },
  },

  "transfer-send": {
    message: { to: "string", amount: "int", to_type: "string?" },
    handle({ to, amount: value, to_type: toType }) {
      const target = receiverType(to, toType);
      const remaining = withdraw({ amount: value });
      // Committed with the withdrawal, or not at all.
      send(target, to, "deposit", { amount: value });
      return remaining;
    },
  },
});

function receiverType(to, toType) {
  const ownType = identity.serviceType();
  const target = toType ?? ownType;
  if (target === ownType && to === identity.objectId()) {
    throw new RioError("invalid-transfer", "cannot transfer to the same account");
  }
  return target;
}
