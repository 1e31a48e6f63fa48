//! Conversion between Arrow record batches and XDM JSON rows, in both
//! directions, for reading and writing Parquet files.
//!
//! Nulls become absent keys (Platform rejects `null`, `ingest-api.md` §2.1), so
//! a row read back from Parquet has the same shape as its JSON Lines twin.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, MapArray,
    PrimitiveArray, StringArray, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    ArrowTimestampType, DataType, Field, Fields, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Number, Value};

/// Converts every row of a record batch to a JSON object, leaving out nulls.
pub fn batch_to_rows(batch: &RecordBatch) -> Result<Vec<Value>, ArrowError> {
    let mut rows: Vec<Map<String, Value>> = vec![Map::new(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for (index, row) in rows.iter_mut().enumerate() {
            if let Some(value) = cell_to_json(column.as_ref(), index)? {
                row.insert(field.name().clone(), value);
            }
        }
    }
    Ok(rows.into_iter().map(Value::Object).collect())
}

/// Converts one cell to JSON, or `None` when it is null.
fn cell_to_json(array: &dyn Array, index: usize) -> Result<Option<Value>, ArrowError> {
    if array.is_null(index) {
        return Ok(None);
    }
    let value = match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(index)),
        DataType::Int8 => Value::from(
            array
                .as_primitive::<arrow::datatypes::Int8Type>()
                .value(index),
        ),
        DataType::Int16 => Value::from(
            array
                .as_primitive::<arrow::datatypes::Int16Type>()
                .value(index),
        ),
        DataType::Int32 => Value::from(
            array
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(index),
        ),
        DataType::Int64 => Value::from(
            array
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(index),
        ),
        DataType::UInt8 => Value::from(
            array
                .as_primitive::<arrow::datatypes::UInt8Type>()
                .value(index),
        ),
        DataType::UInt16 => Value::from(
            array
                .as_primitive::<arrow::datatypes::UInt16Type>()
                .value(index),
        ),
        DataType::UInt32 => Value::from(
            array
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .value(index),
        ),
        DataType::UInt64 => Value::from(
            array
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(index),
        ),
        DataType::Float32 => float(
            array
                .as_primitive::<arrow::datatypes::Float32Type>()
                .value(index) as f64,
        )?,
        DataType::Float64 => float(
            array
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(index),
        )?,
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(index).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(index).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(index).to_owned()),
        DataType::Date32 => {
            let days = array
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(index);
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                .ok_or_else(|| ArrowError::CastError(format!("date32 {days} out of range")))?;
            Value::String(date.format("%Y-%m-%d").to_string())
        }
        DataType::Timestamp(unit, _) => {
            let nanos = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(index)
                    .saturating_mul(1_000_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(index)
                    .saturating_mul(1_000_000),
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(index)
                    .saturating_mul(1_000),
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(index)
                }
            };
            let time = chrono::DateTime::from_timestamp_nanos(nanos);
            Value::String(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        }
        DataType::Struct(fields) => {
            let array = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(array.columns()) {
                if let Some(value) = cell_to_json(column.as_ref(), index)? {
                    object.insert(field.name().clone(), value);
                }
            }
            Value::Object(object)
        }
        DataType::List(_) => list_to_json(array.as_list::<i32>().value(index).as_ref())?,
        DataType::LargeList(_) => list_to_json(array.as_list::<i64>().value(index).as_ref())?,
        DataType::Map(_, _) => {
            let entries = array.as_map().value(index);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut object = Map::new();
            for entry in 0..entries.len() {
                let Some(Value::String(key)) = cell_to_json(keys.as_ref(), entry)? else {
                    return Err(ArrowError::CastError("map keys must be strings".to_owned()));
                };
                if let Some(value) = cell_to_json(values.as_ref(), entry)? {
                    object.insert(key, value);
                }
            }
            Value::Object(object)
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "parquet column type {other} is not supported"
            )));
        }
    };
    Ok(Some(value))
}

fn list_to_json(values: &dyn Array) -> Result<Value, ArrowError> {
    let mut items = Vec::with_capacity(values.len());
    for index in 0..values.len() {
        if let Some(value) = cell_to_json(values, index)? {
            items.push(value);
        }
    }
    Ok(Value::Array(items))
}

fn float(value: f64) -> Result<Value, ArrowError> {
    Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| ArrowError::CastError(format!("{value} is not a JSON number")))
}

/// Builds a record batch of `schema` from JSON rows. Missing keys and values of
/// the wrong type become nulls; supported types are Boolean, Int64, Float64,
/// Utf8, Timestamp (from RFC 3339 strings), Struct, List and Map with Utf8 keys.
pub fn rows_to_batch(
    schema: Arc<arrow::datatypes::Schema>,
    rows: &[Value],
) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let cells: Vec<Option<&Value>> = rows.iter().map(|row| row.get(field.name())).collect();
            json_to_array(field.data_type(), &cells)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

fn json_to_array(data_type: &DataType, cells: &[Option<&Value>]) -> Result<ArrayRef, ArrowError> {
    Ok(match data_type {
        DataType::Boolean => Arc::new(
            cells
                .iter()
                .map(|c| c.and_then(Value::as_bool))
                .collect::<BooleanArray>(),
        ),
        DataType::Int64 => Arc::new(
            cells
                .iter()
                .map(|c| c.and_then(Value::as_i64))
                .collect::<Int64Array>(),
        ),
        DataType::Float64 => Arc::new(
            cells
                .iter()
                .map(|c| c.and_then(Value::as_f64))
                .collect::<Float64Array>(),
        ),
        DataType::Utf8 => Arc::new(
            cells
                .iter()
                .map(|c| c.and_then(Value::as_str))
                .collect::<StringArray>(),
        ),
        DataType::Timestamp(TimeUnit::Second, zone) => {
            timestamp_array::<TimestampSecondType>(cells, zone)
        }
        DataType::Timestamp(TimeUnit::Millisecond, zone) => {
            timestamp_array::<TimestampMillisecondType>(cells, zone)
        }
        DataType::Timestamp(TimeUnit::Microsecond, zone) => {
            timestamp_array::<TimestampMicrosecondType>(cells, zone)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, zone) => {
            timestamp_array::<TimestampNanosecondType>(cells, zone)
        }
        DataType::Struct(fields) => Arc::new(json_to_struct(fields, cells)?),
        DataType::List(item) => {
            let mut offsets = Vec::with_capacity(cells.len() + 1);
            offsets.push(0i32);
            let mut items: Vec<Option<&Value>> = Vec::new();
            for cell in cells {
                items.extend(
                    cell.and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(Some),
                );
                offsets.push(items.len() as i32);
            }
            let child = json_to_array(item.data_type(), &items)?;
            let nulls = NullBuffer::from(
                cells
                    .iter()
                    .map(|c| c.is_some_and(Value::is_array))
                    .collect::<Vec<_>>(),
            );
            Arc::new(ListArray::try_new(
                item.clone(),
                OffsetBuffer::new(offsets.into()),
                child,
                Some(nulls),
            )?)
        }
        DataType::Map(entries_field, sorted) => {
            let DataType::Struct(entry_fields) = entries_field.data_type() else {
                return Err(ArrowError::SchemaError(
                    "map entries must be a struct".to_owned(),
                ));
            };
            let mut offsets = Vec::with_capacity(cells.len() + 1);
            offsets.push(0i32);
            if entry_fields[0].data_type() != &DataType::Utf8 {
                return Err(ArrowError::NotYetImplemented(
                    "writing map keys other than utf8 from json is not supported".to_owned(),
                ));
            }
            let mut keys: Vec<&str> = Vec::new();
            let mut values: Vec<Option<&Value>> = Vec::new();
            for cell in cells {
                for (key, value) in cell.and_then(Value::as_object).into_iter().flatten() {
                    keys.push(key);
                    values.push(Some(value));
                }
                offsets.push(keys.len() as i32);
            }
            let entries = StructArray::try_new(
                entry_fields.clone(),
                vec![
                    Arc::new(StringArray::from(keys)),
                    json_to_array(entry_fields[1].data_type(), &values)?,
                ],
                None,
            )?;
            let nulls = NullBuffer::from(
                cells
                    .iter()
                    .map(|c| c.is_some_and(Value::is_object))
                    .collect::<Vec<_>>(),
            );
            Arc::new(MapArray::try_new(
                entries_field.clone(),
                OffsetBuffer::new(offsets.into()),
                entries,
                Some(nulls),
                *sorted,
            )?)
        }
        other => {
            return Err(ArrowError::NotYetImplemented(format!(
                "writing {other} from json is not supported"
            )));
        }
    })
}

/// Parses RFC 3339 strings into instants of unit `T`, keeping the column's
/// time zone; anything else (or an instant out of range) becomes null.
fn timestamp_array<T: ArrowTimestampType>(
    cells: &[Option<&Value>],
    zone: &Option<Arc<str>>,
) -> ArrayRef {
    let instants = cells.iter().map(|cell| {
        let text = cell.and_then(Value::as_str)?;
        T::from_datetime(chrono::DateTime::parse_from_rfc3339(text).ok()?)
    });
    Arc::new(
        instants
            .collect::<PrimitiveArray<T>>()
            .with_timezone_opt(zone.clone()),
    )
}

/// Returns member `name` of an object. Small objects are scanned, since hashing the name costs
/// more than comparing it with a few keys; this made wide exports measurably faster.
fn member<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if object.len() <= 8 {
        object
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, member)| member)
    } else {
        object.get(name)
    }
}

fn json_to_struct(fields: &Fields, cells: &[Option<&Value>]) -> Result<StructArray, ArrowError> {
    let children = fields
        .iter()
        .map(|field| {
            let child: Vec<Option<&Value>> = cells
                .iter()
                .map(|c| c.and_then(|v| member(v, field.name())))
                .collect();
            json_to_array(field.data_type(), &child)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nulls = NullBuffer::from(
        cells
            .iter()
            .map(|c| c.is_some_and(Value::is_object))
            .collect::<Vec<_>>(),
    );
    StructArray::try_new(fields.clone(), children, Some(nulls))
}

/// Returns the Arrow type of an XDM `identityMap`: namespace → list of
/// `{id, authenticatedState, primary}`.
pub fn identity_map_type() -> DataType {
    let entry = DataType::Struct(Fields::from(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("authenticatedState", DataType::Utf8, true),
        Field::new("primary", DataType::Boolean, true),
    ]));
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new(
                "value",
                DataType::List(Arc::new(Field::new("item", entry, true))),
                true,
            ),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use serde_json::json;

    #[test]
    fn rows_round_trip_through_arrow() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("_id", DataType::Utf8, true),
            Field::new("identityMap", identity_map_type(), true),
            Field::new(
                "person",
                DataType::Struct(Fields::from(vec![Field::new(
                    "gender",
                    DataType::Utf8,
                    true,
                )])),
                true,
            ),
            Field::new("points", DataType::Float64, true),
            Field::new(
                "ids",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
            Field::new("home", DataType::Boolean, true),
            Field::new("count", DataType::Int64, true),
        ]));
        let rows = vec![
            json!({"_id": "a", "identityMap": {"CRMID": [{"id": "c-1", "primary": true}], "Email": [{"id": "a@x.com"}]},
                   "person": {"gender": "female"}, "points": 1.5, "ids": ["x", "y"], "home": true, "count": 3}),
            json!({"_id": "b", "identityMap": {"ECID": [{"id": "e", "authenticatedState": "ambiguous"}]}}),
        ];
        let batch = rows_to_batch(schema, &rows).unwrap();
        assert_eq!(batch_to_rows(&batch).unwrap(), rows);
    }

    #[test]
    fn timestamps_parse_rfc3339_and_read_back_in_utc() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )]));
        let rows = vec![
            json!({"at": "2018-04-26T17:52:25.5+02:00"}),
            json!({"at": "yesterday"}),
            json!({}),
        ];
        let batch = rows_to_batch(schema, &rows).unwrap();
        assert_eq!(
            batch_to_rows(&batch).unwrap(),
            vec![
                json!({"at": "2018-04-26T15:52:25.500Z"}),
                json!({}),
                json!({})
            ]
        );
    }
}
