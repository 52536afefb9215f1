//! The bank accounts of every language, for the tests that move money
//! between them (crossing transfers, the bank under chaos): account names,
//! deploying the three banks, the compiled-component cache shared by the
//! silos of one test process, and a deterministic random sequence.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use rio_client::Client;

use super::guests::{Language, build};

/// The type an account of `language` is deployed as: `RustAccount`,
/// `PyAccount`, `JsAccount`.
pub fn account_type(language: Language) -> String {
    format!("{}Account", language.tag())
}

/// A bank account object: its service type and id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Account {
    pub service_type: String,
    pub id: String,
}

impl Account {
    pub fn new(language: Language, id: impl Into<String>) -> Account {
        Account {
            service_type: account_type(language),
            id: id.into(),
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service_type, self.id)
    }
}

/// Deploys the bank account of each language as `RustAccount`,
/// `PyAccount`, `JsAccount`.
pub async fn deploy_banks(address: &str) {
    deploy_banks_with(address, &rio_client::ConnectOptions::default()).await
}

/// As [`deploy_banks`], connecting with `options` (a token, TLS).
pub async fn deploy_banks_with(address: &str, options: &rio_client::ConnectOptions) {
    let client = Client::connect_with(address, options)
        .await
        .expect("client connects")
        .with_timeout(Duration::from_secs(300));
    for language in Language::ALL {
        client
            .deploy(&account_type(language), build(language.bank()))
            .await
            .unwrap_or_else(|error| panic!("deploying {language:?} bank: {error}"));
    }
}

/// The silo's compiled-component cache (`DATA/compiled/`, see
/// ARCHITECTURE.md), kept from the first silo of this test process that
/// compiled the banks, so that later silos load them instead of compiling
/// again: a JS component takes 10 to 25 s of a shared two-core machine.
static COMPILED: Mutex<Option<tempfile::TempDir>> = Mutex::new(None);

/// A fresh data directory, holding the compiled components if an earlier
/// silo of this process compiled them.
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    if let Some(kept) = COMPILED.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        copy_dir(kept.path(), &dir.path().join("compiled"));
    }
    dir
}

/// Keeps the compiled components of the silo whose data directory is
/// `data`, if none are kept yet.
pub fn keep_compiled(data: &Path) {
    let mut kept = COMPILED.lock().unwrap_or_else(|p| p.into_inner());
    if kept.is_none() && data.join("compiled").is_dir() {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&data.join("compiled"), copy.path());
        *kept = Some(copy);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A deterministic pseudo-random sequence (splitmix64): the same picks on
/// every run, no extra dependency.
pub struct Picks(pub u64);

impl Picks {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}
