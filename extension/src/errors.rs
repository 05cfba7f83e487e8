//! Errors as a DBA sees them: a SQLSTATE, a message, and where it helps a DETAIL
//! and a HINT. Every SQL function reports through [`SqlError::raise`].

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// An error on its way to the client.
#[derive(Debug)]
pub struct SqlError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type SqlResult<T> = Result<T, SqlError>;

impl SqlError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        SqlError {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `22023 invalid_parameter_value`, the answer to bad input.
    pub fn invalid(message: impl Into<String>) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// `XX000 internal_error`, for what should not happen.
    pub fn internal(message: impl Into<String>) -> Self {
        SqlError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, message)
    }

    /// `42704 undefined_object`: no collection by that name.
    pub fn unknown_collection(name: &str) -> Self {
        SqlError::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("collection \"{name}\" is not registered"),
        )
        .hint("Register it with ruvector_register_collection(name, table, column); list them with SELECT name FROM ruvector.collections.")
    }

    /// Raises the error at level ERROR; does not return.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "ruvector");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

impl From<ruvector_integrity::Error> for SqlError {
    fn from(e: ruvector_integrity::Error) -> Self {
        use ruvector_integrity::Error::*;
        match e {
            UnknownOperation { name, valid } => {
                SqlError::invalid(format!("unknown operation \"{name}\""))
                    .hint(format!("Valid operations are: {valid}."))
            }
            TooLarge { .. } => SqlError::new(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                e.to_string(),
            )
            .hint("Raise ruvector.solver_max_edges if the memory and time are acceptable."),
            CapacityOverflow { .. } => SqlError::new(
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                e.to_string(),
            ),
            Cancelled(_) => SqlError::new(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, e.to_string()),
            Edge { .. } => SqlError::invalid(e.to_string()).hint(format!(
                "Each edge has {}.",
                ruvector_integrity::edge_list::EDGE_KEYS
            )),
            OutOfMemory { .. } => {
                SqlError::new(PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY, e.to_string())
            }
            Spectral(_) | Audit(_) => SqlError::internal(e.to_string()),
            _ => SqlError::invalid(e.to_string()),
        }
    }
}

impl From<ruvector_integrity::registration::Refusal> for SqlError {
    fn from(r: ruvector_integrity::registration::Refusal) -> Self {
        use ruvector_integrity::registration::RefusalKind::*;
        let code = match r.kind {
            InvalidValue => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            WrongObjectType => PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            UndefinedColumn => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            DatatypeMismatch => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        };
        let mut error = SqlError::new(code, r.message);
        error.detail = r.detail;
        error.hint = r.hint;
        error
    }
}

impl From<pgrx::spi::Error> for SqlError {
    fn from(e: pgrx::spi::Error) -> Self {
        SqlError::internal(format!("SPI: {e}"))
    }
}

impl From<serde_json::Error> for SqlError {
    fn from(e: serde_json::Error) -> Self {
        SqlError::internal(format!("unexpected JSON from the catalog: {e}"))
    }
}

/// Raising instead of returning, at the SQL function boundary.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: Into<SqlError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.into().raise())
    }
}

/// For queries that may return no row: pgrx reports an empty result of
/// `Spi::get_one` as an error, here it is `None`.
pub trait Optional<T> {
    fn optional(self) -> SqlResult<Option<T>>;
}

impl<T> Optional<T> for Result<Option<T>, pgrx::spi::Error> {
    fn optional(self) -> SqlResult<Option<T>> {
        match self {
            Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
            other => Ok(other?),
        }
    }
}

impl<A, B> Optional<(Option<A>, Option<B>)> for Result<(Option<A>, Option<B>), pgrx::spi::Error> {
    fn optional(self) -> SqlResult<Option<(Option<A>, Option<B>)>> {
        match self {
            Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
            other => Ok(Some(other?)),
        }
    }
}
