//! Stored vocabularies: statuses and kinds kept as TEXT columns, each one
//! Rust enum with its stored names in one place.
//!
//! [`text_enum!`] gives an enum the name it is stored and shown under
//! (`as_str`, `Display`, serde), the way back (`parse`, `FromStr`), every
//! value (`ALL`), and the database conversions; a stored name this build
//! does not know is a read error naming the vocabulary, never a silent
//! default.

/// Declares a stored vocabulary: `enum Name ("what") { Variant = "name", ... }`.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value stored or shown as `s`.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                $name::parse(s).ok_or_else(|| format!("{s:?} is not a {}", $what))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl $crate::db::sql::Param for $name {
            fn value(&self) -> $crate::db::sql::Value<'_> {
                $crate::db::sql::Value::Text(self.as_str())
            }
        }

        impl $crate::db::sql::Column for $name {
            fn column(v: $crate::db::sql::Value<'_>) -> Result<$name, String> {
                let s = String::column(v)?;
                $name::parse(&s).ok_or_else(|| format!("{} {s:?}", $what))
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::super::{CallbackState, JobKind, JobStatus, ModelStatus, SnapshotStatus};

    fn round_trips<T: Copy + PartialEq + std::fmt::Debug + std::str::FromStr>(
        all: &[T],
        name: fn(T) -> &'static str,
    ) {
        let mut seen = std::collections::HashSet::new();
        for &v in all {
            assert!(seen.insert(name(v)), "{v:?}: a name used twice");
            assert_eq!(name(v).parse::<T>().ok(), Some(v));
        }
        assert!("no such value".parse::<T>().is_err());
    }

    #[test]
    fn every_vocabulary_round_trips_through_its_stored_names() {
        round_trips(ModelStatus::ALL, ModelStatus::as_str);
        round_trips(JobKind::ALL, JobKind::as_str);
        round_trips(JobStatus::ALL, JobStatus::as_str);
        round_trips(SnapshotStatus::ALL, SnapshotStatus::as_str);
        round_trips(CallbackState::ALL, CallbackState::as_str);
        assert_eq!(
            serde_json::to_string(&ModelStatus::NotUploaded).ok().as_deref(),
            Some("\"not-uploaded\"")
        );
    }

    #[test]
    fn an_unknown_stored_name_is_a_read_error_not_a_default() {
        let conn = super::super::sql::Conn::Sqlite(rusqlite::Connection::open_in_memory().expect("db"));
        let read =
            conn.query_row("SELECT 'exploded'", super::super::sql::params![], |r| r.get::<CallbackState>(0));
        let err = read.expect_err("an unknown state was read");
        assert!(err.to_string().contains("callback state \"exploded\""), "{err}");
    }
}
