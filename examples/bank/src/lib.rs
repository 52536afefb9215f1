//! A bank account service object (deploy it as `Account`).
//!
//! `deposit {"amount": n}`, `withdraw {"amount": n}` and `balance` answer
//! `{"balance": n}`; `transfer {"to": "bob", "amount": n}` moves money to the
//! account `Account/bob` by calling its `deposit`. An optional `"to_type"`
//! names the other account's service type (default: this one's), so accounts
//! written in other languages (`guests/bank-python`, `guests/bank-js`, with
//! the same messages) can receive transfers too.
//!
//! A transfer saves the lower balance, then calls the other account. If that
//! call fails (the other account refuses, traps, times out...), the handler
//! returns the error, and returning an error discards every write of the
//! turn: the money never leaves. The deduction becomes durable only with the
//! `Ok` reply, after the deposit has been committed on the other side. (If
//! this silo died in between, the deposit would stand without the
//! withdrawal: calls are not distributed transactions.)
//!
//! `pay {"to", "amount", "fee", "fee_to", "to_type"?, "fee_to_type"?}`
//! withdraws `amount + fee`, then makes two calls: `deposit` of `amount` to
//! the payee and `deposit` of `fee` to the fee account. Made with an
//! idempotency key, a payment whose silo dies between the two calls is
//! finished by the account's next owner, so neither deposit stands alone.
//!
//! `transfer-send` (same message and reply) withdraws and `send`s the
//! deposit one way instead: the deposit is stored in the same commit as the
//! withdrawal and delivered exactly once afterwards, so a transfer is never
//! half done, whatever dies when. The price: the sender does not learn the
//! receiver's answer (a refused deposit becomes a dead letter).

use rio_sdk::prelude::*;

#[derive(Serialize, Deserialize)]
struct Amount {
    amount: i64,
}

#[derive(Serialize, Deserialize)]
struct Balance {
    balance: i64,
}

#[derive(Deserialize)]
struct Transfer {
    to: String,
    amount: i64,
    /// The other account's service type; absent means this account's own.
    to_type: Option<String>,
}

#[derive(Deserialize)]
struct Payment {
    to: String,
    amount: i64,
    fee: i64,
    fee_to: String,
    to_type: Option<String>,
    fee_to_type: Option<String>,
}

fn current_balance() -> Result<i64, Error> {
    Ok(state::load("balance")?.unwrap_or(0))
}

fn set_balance(balance: i64) -> Result<Balance, Error> {
    state::save("balance", &balance)?;
    Ok(Balance { balance })
}

fn positive(amount: i64) -> Result<i64, Error> {
    if amount <= 0 {
        return Err(Error::new(
            "invalid-amount",
            format!("amount must be positive, got {amount}"),
        ));
    }
    Ok(amount)
}

fn deposit(message: Amount) -> Result<Balance, Error> {
    let amount = positive(message.amount)?;
    let balance = current_balance()?
        .checked_add(amount)
        .ok_or_else(|| Error::new("invalid-amount", "the balance would overflow"))?;
    set_balance(balance)
}

fn withdraw(message: Amount) -> Result<Balance, Error> {
    let amount = positive(message.amount)?;
    let balance = current_balance()?;
    if amount > balance {
        return Err(Error::new(
            "insufficient-funds",
            format!("balance {balance} is less than {amount}"),
        ));
    }
    set_balance(balance - amount)
}

fn balance() -> Result<Balance, Error> {
    Ok(Balance {
        balance: current_balance()?,
    })
}

/// The other account's type, refusing a transfer to this very account.
fn receiver_type(message: &Transfer) -> Result<String, Error> {
    let own_type = identity::service_type();
    let to_type = message.to_type.clone().unwrap_or_else(|| own_type.clone());
    if to_type == own_type && message.to == identity::object_id() {
        return Err(Error::new(
            "invalid-transfer",
            "cannot transfer to the same account",
        ));
    }
    Ok(to_type)
}

fn transfer(message: Transfer) -> Result<Balance, Error> {
    let to_type = receiver_type(&message)?;
    let remaining = withdraw(Amount {
        amount: message.amount,
    })?;
    let _: Balance = call(
        &to_type,
        &message.to,
        "deposit",
        &Amount {
            amount: message.amount,
        },
    )?;
    Ok(remaining)
}

fn transfer_send(message: Transfer) -> Result<Balance, Error> {
    let to_type = receiver_type(&message)?;
    let remaining = withdraw(Amount {
        amount: message.amount,
    })?;
    send(
        &to_type,
        &message.to,
        "deposit",
        &Amount {
            amount: message.amount,
        },
    )?;
    Ok(remaining)
}

/// Two calls in one turn: the payee's deposit, then the fee's.
fn pay(message: Payment) -> Result<Balance, Error> {
    let own_type = identity::service_type();
    let to_type = message.to_type.clone().unwrap_or_else(|| own_type.clone());
    let fee_type = message.fee_to_type.clone().unwrap_or(own_type);
    let me = identity::object_id();
    if (to_type == identity::service_type() && message.to == me)
        || (fee_type == identity::service_type() && message.fee_to == me)
    {
        return Err(Error::new(
            "invalid-transfer",
            "cannot pay this very account",
        ));
    }
    let fee = positive(message.fee)?;
    let total = positive(message.amount)?
        .checked_add(fee)
        .ok_or_else(|| Error::new("invalid-amount", "the payment would overflow"))?;
    let remaining = withdraw(Amount { amount: total })?;
    let _: Balance = call(
        &to_type,
        &message.to,
        "deposit",
        &Amount {
            amount: message.amount,
        },
    )?;
    let _: Balance = call(
        &fee_type,
        &message.fee_to,
        "deposit",
        &Amount { amount: fee },
    )?;
    Ok(remaining)
}

rio_sdk::service! {
    "pay" => pay,
    "transfer-send" => transfer_send,
    "deposit" => deposit,
    "withdraw" => withdraw,
    "balance" => balance,
    "transfer" => transfer,
}
