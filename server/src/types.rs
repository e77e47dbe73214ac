//! Mappings between the SQL layer and the wire protocol: Postgres type OIDs to
//! Arrow types (for Parse), [`TxnStatus`] to the ReadyForQuery byte, and
//! [`SqlError`]/DataFusion errors to ErrorResponse fields.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::DataFusionError;
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::TransactionStatus;
use provdb_sql::{SqlError, TxnStatus};

/// The Arrow type a client-declared parameter type (Parse OID) asks for.
/// `None` means "let the server infer it" (unknown or unsupported types).
pub fn arrow_type_for_pg(pg: &Type) -> Option<DataType> {
    let dt = match *pg {
        Type::BOOL => DataType::Boolean,
        Type::CHAR => DataType::Int8,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::OID => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::UUID | Type::JSON | Type::JSONB => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        _ => return None,
    };
    Some(dt)
}

/// The Postgres type used on the wire for a parameter of Arrow type `dt` when
/// the client declared none.
pub fn pg_type_for_arrow(dt: &DataType) -> Type {
    arrow_pg::datatypes::into_pg_type(dt).unwrap_or(Type::UNKNOWN)
}

/// ReadyForQuery status byte for a session's transaction state.
pub fn wire_txn_status(status: TxnStatus) -> TransactionStatus {
    match status {
        TxnStatus::Idle => TransactionStatus::Idle,
        TxnStatus::InBlock => TransactionStatus::Transaction,
        TxnStatus::Failed => TransactionStatus::Error,
    }
}

/// ErrorResponse fields for a [`SqlError`] (severity ERROR).
pub fn error_info(err: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), err.code.into(), err.message.clone());
    info.detail = err.detail.clone();
    info.hint = err.hint.clone();
    info
}

/// A [`SqlError`] as a pgwire error (sent as ErrorResponse, connection kept).
pub fn pg_error(err: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(err)))
}

/// An error raised while a result stream was being produced, with the
/// SQLSTATE the SQL layer assigns to it.
pub fn datafusion_error(err: DataFusionError) -> SqlError {
    provdb_sql::error::from_datafusion(err)
}

/// A protocol-level error with a SQLSTATE, severity ERROR.
pub fn protocol_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// A connection-ending error (severity FATAL).
pub fn fatal_error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("FATAL".into(), code.into(), message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_oids_map_to_arrow() {
        assert_eq!(arrow_type_for_pg(&Type::INT8), Some(DataType::Int64));
        assert_eq!(arrow_type_for_pg(&Type::VARCHAR), Some(DataType::Utf8));
        assert_eq!(
            arrow_type_for_pg(&Type::TIMESTAMPTZ),
            Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
        );
        assert_eq!(arrow_type_for_pg(&Type::UNKNOWN), None);
        assert_eq!(arrow_type_for_pg(&Type::POINT), None);
    }

    #[test]
    fn arrow_types_map_to_pg() {
        assert_eq!(pg_type_for_arrow(&DataType::Int32), Type::INT4);
        assert_eq!(pg_type_for_arrow(&DataType::Utf8View), Type::TEXT);
        assert_eq!(pg_type_for_arrow(&DataType::Null), Type::UNKNOWN);
    }

    #[test]
    fn txn_status_bytes() {
        assert_eq!(wire_txn_status(TxnStatus::Idle), TransactionStatus::Idle);
        assert_eq!(
            wire_txn_status(TxnStatus::InBlock),
            TransactionStatus::Transaction
        );
        assert_eq!(wire_txn_status(TxnStatus::Failed), TransactionStatus::Error);
    }

    #[test]
    fn sql_error_keeps_all_fields() {
        let e = SqlError::new("42P01", "relation \"x\" does not exist")
            .with_detail("d")
            .with_hint("h");
        let info = error_info(&e);
        assert_eq!(info.code, "42P01");
        assert_eq!(info.severity, "ERROR");
        assert_eq!(info.detail.as_deref(), Some("d"));
        assert_eq!(info.hint.as_deref(), Some("h"));
    }

    #[test]
    fn datafusion_divide_by_zero_is_22012() {
        let e = DataFusionError::ArrowError(
            Box::new(datafusion::arrow::error::ArrowError::DivideByZero),
            None,
        );
        assert_eq!(datafusion_error(e).code, "22012");
    }
}
