//! What a collection may be: the checks a registration makes of its name, its
//! options and the table and column it names, from the facts the extension
//! reads of the catalog ([`TableFacts`]). Each refusal says what kind of error
//! it is ([`RefusalKind`], a SQLSTATE in the extension), what is wrong, and
//! what to do.

use serde::Deserialize;

/// Longest collection name, in bytes (PostgreSQL's NAMEDATALEN − 1).
pub const NAME_MAX: usize = 63;

/// The distance metrics a collection may use.
pub const DISTANCE_METRICS: [&str; 4] = ["l2", "cosine", "ip", "l1"];
/// The index types a collection may declare.
pub const INDEX_TYPES: [&str; 3] = ["hnsw", "ivfflat", "flat"];
/// The most dimensions a vector may have (pgvector's limit).
pub const MAX_DIMENSIONS: i32 = 16_000;

/// `pg_type` OID of `real[]`.
const FLOAT4_ARRAY: i64 = 1021;

/// What kind of refusal, for the SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    InvalidValue,
    WrongObjectType,
    UndefinedColumn,
    DatatypeMismatch,
}

/// Why a registration is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Refusal {
    pub(crate) fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Refusal {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Refusal {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A collection name: 1 to 63 ASCII letters, digits and `_ . : -`, starting
/// with a letter, digit or `_`.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let valid_chars = name.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && matches!(b, b'.' | b':' | b'-'))
    });
    if name.is_empty() || name.len() > NAME_MAX || !valid_chars {
        return Err(Refusal::new(
            RefusalKind::InvalidValue,
            format!("invalid collection name \"{name}\""),
        )
        .detail("A name has 1 to 63 ASCII letters, digits and _ . : - characters, and starts with a letter, digit or _."));
    }
    Ok(())
}

/// `value` is one of `valid`.
pub fn check_choice(what: &str, value: &str, valid: &[&str]) -> Result<(), Refusal> {
    if valid.contains(&value) {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::InvalidValue,
        format!("invalid {what} \"{value}\""),
    )
    .hint(format!("Valid values: {}.", valid.join(", "))))
}

/// What the catalog says of the table and column a registration names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TableFacts {
    pub schema: String,
    pub table: String,
    /// `pg_class.relkind`.
    pub relkind: String,
    /// `pg_class.relpersistence`.
    pub persistence: String,
    pub is_partition: bool,
    pub inherits: bool,
    pub inherited: bool,
    pub column_type_oid: Option<i64>,
    /// The column's type as PostgreSQL writes it (`None`: no such column).
    pub column_type: Option<String>,
    pub column_typmod: Option<i32>,
    /// The column is pgvector's `vector` (found by its extension, not a name).
    pub pgvector: bool,
    /// The column's type casts to `real[]` (pgvector's `vector` does), or is a
    /// domain over it: vectors are read through that cast.
    #[serde(default)]
    pub casts_to_real_array: bool,
}

impl TableFacts {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// Refuses what cannot be a collection's table: views, materialized
    /// views, foreign tables (their rows live elsewhere: a foreign table can
    /// be a partition), temporary tables (they vanish with their session),
    /// and tables whose rows the gate would not see: a partition (rows reach
    /// it through its parent), a table in an inheritance tree.
    pub fn check_kind(&self) -> Result<(), Refusal> {
        let wrong = |message: String| Refusal::new(RefusalKind::WrongObjectType, message);
        let refused = match self.relkind.as_str() {
            "r" | "p" => None,
            "v" => Some("a view"),
            "m" => Some("a materialized view"),
            "f" => Some("a foreign table"),
            _ => Some("not a table"),
        };
        if let Some(what) = refused {
            return Err(wrong(format!(
                "\"{}\" is {what}: a collection's table must be a table or a partitioned table",
                self.qualified()
            ))
            .hint("A foreign table can hold a collection's rows as a partition of a partitioned table."));
        }
        if self.persistence == "t" {
            return Err(wrong(format!(
                "\"{}\" is a temporary table: it cannot be a collection",
                self.qualified()
            ))
            .detail("A temporary table disappears with the session that made it, and no other session or the worker can see it."));
        }
        if self.is_partition {
            return Err(partition(&self.qualified()));
        }
        let family = if self.inherits {
            Some("inherits from another table, whose scans and writes would reach it past the gate")
        } else if self.inherited {
            Some("has inheritance children, whose rows would be the collection's past the gate")
        } else {
            None
        };
        match family {
            Some(why) => Err(wrong(format!("\"{}\" {why}", self.qualified()))
                .hint("A collection's table is a plain table or the root of a partitioned table.")),
            None => Ok(()),
        }
    }

    /// The column exists and holds vectors: `real[]` (by type OID),
    /// pgvector's `vector`, or any type that casts to `real[]`.
    pub fn check_column(&self, column: &str) -> Result<(), Refusal> {
        let Some(column_type) = &self.column_type else {
            return Err(Refusal::new(
                RefusalKind::UndefinedColumn,
                format!(
                    "column \"{column}\" of \"{}\" does not exist",
                    self.qualified()
                ),
            ));
        };
        if self.column_type_oid == Some(FLOAT4_ARRAY) || self.pgvector || self.casts_to_real_array {
            return Ok(());
        }
        Err(Refusal::new(
            RefusalKind::DatatypeMismatch,
            format!("column \"{column}\" is of type {column_type}, not a vector"),
        )
        .hint("A collection's column is real[], or of a type that casts to real[] (pgvector's vector does)."))
    }

    /// Whether the number of dimensions must be read from the data: none was
    /// given, and the column is a `real[]` (a pgvector column's type says,
    /// or nothing does).
    pub fn needs_a_vector(&self, given: Option<i32>) -> bool {
        given.is_none() && !self.pgvector
    }

    fn typmod_dimensions(&self) -> Option<i32> {
        self.column_typmod.filter(|&m| self.pgvector && m > 0)
    }

    /// The collection's dimensions: as given, else the column type's, else
    /// the first vector's (`first`: its length and number of array
    /// dimensions, when the table has one).
    pub fn dimensions(
        &self,
        column: &str,
        given: Option<i32>,
        first: Option<(Option<i32>, Option<i32>)>,
    ) -> Result<i32, Refusal> {
        let found = match (given, self.typmod_dimensions(), first) {
            (Some(d), _, _) | (None, Some(d), _) => Some(d),
            (None, None, Some((length, Some(1)))) => length,
            (None, None, Some((_, ndims))) => {
                return Err(Refusal::new(
                    RefusalKind::DatatypeMismatch,
                    format!(
                        "column \"{column}\" holds {}-dimensional arrays, not vectors",
                        ndims.unwrap_or(0)
                    ),
                )
                .hint("A vector is a one-dimensional real[]."))
            }
            (None, None, None) => None,
        };
        let dimensions = found.ok_or_else(|| {
            Refusal::new(
                RefusalKind::InvalidValue,
                "dimensions is required: the column has no type modifier and no vectors yet",
            )
            .hint("Pass dimensions => N.")
        })?;
        if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
            return Err(Refusal::new(
                RefusalKind::InvalidValue,
                format!("dimensions must be between 1 and {MAX_DIMENSIONS}, got {dimensions}"),
            ));
        }
        Ok(dimensions)
    }
}

/// The refusal of a table that is a partition (found in the facts, or by the
/// registration's second look once it holds its lock).
pub fn partition(qualified: &str) -> Refusal {
    Refusal::new(
        RefusalKind::WrongObjectType,
        format!(
            "\"{qualified}\" is a partition: register the partitioned table at the top of its tree"
        ),
    )
    .hint("A collection's table is a plain table or the root of a partitioned table.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> TableFacts {
        TableFacts {
            schema: "public".into(),
            table: "docs".into(),
            relkind: "r".into(),
            persistence: "p".into(),
            is_partition: false,
            inherits: false,
            inherited: false,
            column_type_oid: Some(FLOAT4_ARRAY),
            column_type: Some("real[]".into()),
            column_typmod: Some(-1),
            pgvector: false,
            casts_to_real_array: false,
        }
    }

    #[test]
    fn names_are_short_plain_identifiers() {
        for good in ["docs", "_x", "a.b:c-d", "9lives"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".docs", "-x", "a b", "é", &"x".repeat(64)] {
            assert_eq!(
                check_name(bad).unwrap_err().kind,
                RefusalKind::InvalidValue,
                "{bad}"
            );
        }
        assert_eq!(
            check_choice("distance_metric", "l2", &DISTANCE_METRICS),
            Ok(())
        );
        let e = check_choice("index_type", "btree", &INDEX_TYPES).unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("Valid values: hnsw, ivfflat, flat.")
        );
    }

    #[test]
    fn only_a_plain_or_partitioned_table_outside_inheritance_is_a_collection() {
        assert_eq!(facts().check_kind(), Ok(()));
        let with = |change: fn(&mut TableFacts)| {
            let mut f = facts();
            change(&mut f);
            f.check_kind().unwrap_err()
        };
        assert!(with(|f| f.relkind = "v".into())
            .message
            .contains("is a view"));
        assert!(with(|f| f.relkind = "m".into())
            .message
            .contains("materialized view"));
        assert!(with(|f| f.relkind = "f".into())
            .message
            .contains("foreign table"));
        assert!(with(|f| f.persistence = "t".into())
            .message
            .contains("temporary"));
        assert!(with(|f| f.is_partition = true)
            .message
            .contains("is a partition"));
        assert!(with(|f| f.inherits = true).message.contains("inherits"));
        assert!(with(|f| f.inherited = true)
            .message
            .contains("inheritance children"));
        assert_eq!(
            with(|f| f.relkind = "S".into()).kind,
            RefusalKind::WrongObjectType
        );
    }

    #[test]
    fn the_column_holds_vectors() {
        assert_eq!(facts().check_column("embedding"), Ok(()));
        let mut missing = facts();
        missing.column_type = None;
        assert_eq!(
            missing.check_column("x").unwrap_err().kind,
            RefusalKind::UndefinedColumn
        );
        let mut text = facts();
        text.column_type_oid = Some(25);
        text.column_type = Some("text".into());
        assert_eq!(
            text.check_column("x").unwrap_err().kind,
            RefusalKind::DatatypeMismatch
        );
        let mut own = text.clone();
        text.pgvector = true;
        assert_eq!(text.check_column("x"), Ok(()));
        // A type of one's own with a cast to real[]: read through the cast.
        own.column_type = Some("my_vector".into());
        own.casts_to_real_array = true;
        assert_eq!(own.check_column("x"), Ok(()));
        assert!(own.needs_a_vector(None));
    }

    #[test]
    fn dimensions_come_from_the_call_the_type_or_the_first_vector() {
        let f = facts();
        assert!(f.needs_a_vector(None));
        assert!(!f.needs_a_vector(Some(3)));
        assert_eq!(f.dimensions("e", Some(3), None), Ok(3));
        assert_eq!(f.dimensions("e", None, Some((Some(64), Some(1)))), Ok(64));
        let e = f.dimensions("e", None, None).unwrap_err();
        assert!(e.message.contains("dimensions is required"), "{e}");
        let e = f
            .dimensions("e", None, Some((Some(4), Some(2))))
            .unwrap_err();
        assert_eq!(e.kind, RefusalKind::DatatypeMismatch);
        assert!(e.message.contains("2-dimensional"));
        for out in [0, 16_001] {
            assert!(f
                .dimensions("e", Some(out), None)
                .unwrap_err()
                .message
                .contains("between 1 and 16000"));
        }
        let mut vector = facts();
        vector.pgvector = true;
        vector.column_typmod = Some(384);
        assert!(!vector.needs_a_vector(None));
        assert_eq!(vector.dimensions("e", None, None), Ok(384));
    }
}
