"""A bank account in Python with the messages and CBOR shapes of the Rust
`examples/bank` (deploy it under any type name, e.g. `PyAccount`).

- `deposit {"amount": n}`, `withdraw {"amount": n}` and `balance` answer
  `{"balance": n}`;
- `transfer {"to": id, "amount": n, "to_type": type?}` withdraws, then calls
  `deposit` on `to_type/to` (default: this account's own type), so accounts
  in Rust, Python and JS can pay each other. If that call fails, its error is
  raised again: the turn fails and its withdrawal is discarded;
- `pay {"to", "amount", "fee", "fee_to", "to_type"?, "fee_to_type"?}`
  withdraws `amount + fee`, then calls `deposit` on the payee and on the fee
  account: two calls in one turn;
- `transfer-send` (same message and reply) withdraws and `send`s the deposit
  one way: stored with the withdrawal, delivered exactly once afterwards.

Errors: `invalid-amount`, `insufficient-funds`, `invalid-transfer`, or the
other account's error. Build it with `rio build guests/bank-python`.
"""

from dataclasses import dataclass
from typing import Optional

from rio_sdk import RioError, call, handler, identity, send, service, state

# The Rust account keeps an i64; a balance past it is refused the same way.
_LARGEST_BALANCE = 2**63 - 1


@dataclass
class Amount:
    amount: int


@dataclass
class Transfer:
    to: str
    amount: int
    to_type: Optional[str] = None


@dataclass
class Payment:
    to: str
    amount: int
    fee: int
    fee_to: str
    to_type: Optional[str] = None
    fee_to_type: Optional[str] = None


def _positive(amount):
    if amount <= 0:
        raise RioError("invalid-amount", f"amount must be positive, got {amount}")
    return amount


def _set_balance(balance):
    state.save("balance", balance)
    return {"balance": balance}


@service
class Account:
    @handler("deposit")
    def deposit(self, message: Amount):
        balance = state.load("balance", 0) + _positive(message.amount)
        if balance > _LARGEST_BALANCE:
            raise RioError("invalid-amount", "the balance would overflow")
        return _set_balance(balance)

    @handler("withdraw")
    def withdraw(self, message: Amount):
        amount = _positive(message.amount)
        balance = state.load("balance", 0)
        if amount > balance:
            raise RioError("insufficient-funds", f"balance {balance} is less than {amount}")
        return _set_balance(balance - amount)

    @handler("balance")
    def balance(self):
        return {"balance": state.load("balance", 0)}

    @handler("transfer")
    def transfer(self, message: Transfer):
        to_type = _receiver_type(message)
        remaining = self.withdraw(Amount(message.amount))
        # A failed deposit raises RioError with the other account's kind;
        # letting it propagate discards the withdrawal above.
        call(to_type, message.to, "deposit", {"amount": message.amount})
        return remaining

    @handler("pay")
    def pay(self, message: Payment):
        own_type = identity.service_type()
        to_type = message.to_type if message.to_type is not None else own_type
        fee_type = message.fee_to_type if message.fee_to_type is not None else own_type
        me = identity.object_id()
        if (to_type == own_type and message.to == me) or (fee_type == own_type and message.fee_to == me):
            raise RioError("invalid-transfer", "cannot pay this very account")
        fee = _positive(message.fee)
        remaining = self.withdraw(Amount(_positive(message.amount) + fee))
        call(to_type, message.to, "deposit", {"amount": message.amount})
        call(fee_type, message.fee_to, "deposit", {"amount": fee})
        return remaining

    @handler("transfer-send")
    def transfer_send(self, message: Transfer):
        to_type = _receiver_type(message)
        remaining = self.withdraw(Amount(message.amount))
        # Committed with the withdrawal, or not at all.
        send(to_type, message.to, "deposit", {"amount": message.amount})
        return remaining


def _receiver_type(message: Transfer) -> str:
    own_type = identity.service_type()
    to_type = message.to_type if message.to_type is not None else own_type
    if to_type == own_type and message.to == identity.object_id():
        raise RioError("invalid-transfer", "cannot transfer to the same account")
    return to_type
