//! Partner accounts: the one place they are provisioned, whether by the
//! operator (`strata admin create-partner`) or by self sign-up
//! (`POST /users/`, when the server allows it).

use strata_pipeline::db::{Db, Partner};

/// What a new account is made of.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Display name.
    pub name: String,
    /// Contact e-mail.
    pub email: String,
    /// Login name.
    pub username: String,
    /// The password (hashed with argon2id before it is stored).
    pub password: String,
}

/// A created account and the secrets shown once to its owner.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The account.
    pub partner: Partner,
    /// The key print tokens are created with (stored only as its hash).
    pub api_key: String,
    /// The key its callbacks are signed with (`whsec_...`).
    pub callback_secret: String,
}

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The username is taken.
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    /// A field is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The password could not be hashed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] strata_pipeline::PipelineError),
}

/// Checks a new account's fields: a username of 3 to 64 letters, digits,
/// `.`, `_` or `-`; a password of 8 to 1024 characters; an e-mail address;
/// a name of 1 to 256 characters without control characters.
pub fn check(account: &NewAccount) -> Result<(), AccountError> {
    let u = &account.username;
    if !(3..=64).contains(&u.len()) || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(AccountError::Invalid("username is 3 to 64 letters, digits, '.', '_' or '-'".into()));
    }
    if !(8..=1024).contains(&account.password.chars().count()) {
        return Err(AccountError::Invalid("password is 8 to 1024 characters".into()));
    }
    if !crate::routes::partners::valid_email(&account.email) {
        return Err(AccountError::Invalid(format!("{:?} is not an e-mail address", account.email)));
    }
    if !crate::api::valid_name(&account.name) {
        return Err(AccountError::Invalid("name is 1 to 256 characters without control characters".into()));
    }
    Ok(())
}

/// Creates an account (after [`check`]); slow on purpose (argon2id), so a
/// server calls it off its reactor.
pub fn create(db: &Db, account: &NewAccount) -> Result<Provisioned, AccountError> {
    check(account)?;
    let hash = crate::auth::hash_password(&account.password).map_err(AccountError::Hash)?;
    let api_key = crate::auth::random_hex(16);
    let callback_secret = crate::callbacks::new_secret();
    let partner = Partner {
        id: crate::auth::uuid_v4(),
        name: account.name.trim().to_string(),
        email: account.email.clone(),
        username: account.username.clone(),
    };
    if !db.create_partner(&partner, &hash, &crate::auth::secret_hash(&api_key), &callback_secret)? {
        return Err(AccountError::UsernameTaken(account.username.clone()));
    }
    Ok(Provisioned { partner, api_key, callback_secret })
}

/// An operator-made partner (`strata admin create-partner`): its username
/// is derived from `name` (lower-case letters and digits, a number added
/// while it is taken) and its password is random; both are returned with
/// the account, since only the password's hash is kept.
pub fn provision_partner(db: &Db, name: &str, email: &str) -> Result<(Provisioned, String), AccountError> {
    let base: String = name.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).take(24).collect();
    let base = if base.len() < 3 { format!("{base}partner") } else { base };
    let password = crate::auth::random_hex(12);
    for attempt in 0..100 {
        let username = if attempt == 0 { base.clone() } else { format!("{base}{attempt}") };
        let account = NewAccount {
            name: name.to_string(),
            email: email.to_string(),
            username,
            password: password.clone(),
        };
        match create(db, &account) {
            Ok(made) => return Ok((made, password)),
            Err(AccountError::UsernameTaken(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AccountError::Invalid("no free username for this name; choose another name".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(username: &str) -> NewAccount {
        NewAccount {
            name: "Print Shop".into(),
            email: "ops@shop.example".into(),
            username: username.into(),
            password: "correct horse".into(),
        }
    }

    #[test]
    fn accounts_are_checked_and_usernames_unique() {
        for db in strata_pipeline::db::testing::backends() {
            let db = db;
            let made = create(&db, &account("shop")).expect("created");
            assert_eq!(made.api_key.len(), 32);
            assert!(made.callback_secret.starts_with("whsec_"));
            let (found, hash) = db.partner_login("shop").expect("q").expect("stored");
            assert_eq!(found, made.partner);
            assert!(crate::auth::verify_password("correct horse", &hash));
            assert!(matches!(create(&db, &account("shop")), Err(AccountError::UsernameTaken(_))));
            for bad in [
                NewAccount { username: "a b".into(), ..account("x") },
                NewAccount { username: "ab".into(), ..account("x") },
                NewAccount { password: "short".into(), ..account("abc") },
                NewAccount { email: "nobody".into(), ..account("abc") },
                NewAccount { name: " ".into(), ..account("abc") },
            ] {
                assert!(matches!(create(&db, &bad), Err(AccountError::Invalid(_))), "{bad:?}");
            }
        }
    }

    #[test]
    fn provisioned_partners_get_a_free_username_from_their_name() {
        for db in strata_pipeline::db::testing::backends() {
            let db = db;
            let (first, password) = provision_partner(&db, "Print Shop!", "ops@shop.example").expect("first");
            assert_eq!(first.partner.username, "printshop");
            let (_, hash) = db.partner_login("printshop").expect("q").expect("stored");
            assert!(crate::auth::verify_password(&password, &hash));
            let (second, _) = provision_partner(&db, "print shop", "b@shop.example").expect("second");
            assert_eq!(second.partner.username, "printshop1");
            let (short, _) = provision_partner(&db, "X", "x@shop.example").expect("short name");
            assert_eq!(short.partner.username, "xpartner");
        }
    }
}
