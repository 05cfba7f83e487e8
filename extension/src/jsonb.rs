//! jsonb arguments, read in place and bounded before anything is built.
//!
//! pgrx's `JsonB` argument prints the document to text and parses it into a
//! `serde_json::Value` tree before the function body runs: about 25 times the
//! document's size in Rust's heap, outside PostgreSQL's memory accounting, and
//! with no interrupt check. A [`JsonbArg`] is the datum itself: its size and
//! its root's element count are read from the first bytes (only those are
//! detoasted) so that an oversized input is refused at once; a small document
//! is then turned into a `Value` ([`JsonbArg::small`]), and an edge list is
//! read element by element straight from PostgreSQL's binary format
//! ([`JsonbArg::read_edges`]), interrupts checked as it goes.
//!
//! Nothing here keeps a pointer past the call it was given for: the datum
//! belongs to the function call, detoasted copies to its memory context.
//!
//! The other way, a flat object is built straight into a jsonb ([`object`]),
//! where pgrx's `JsonB` result would print a `Value` and parse the text back:
//! for the gate's answer, on every call.

use std::ffi::c_char;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, IntoDatum};
use ruvector_integrity::edge_list::{CapacityRef, EdgeListReader, EdgeRef, NodeRef};
use ruvector_integrity::Error;
use serde_json::Value;

use crate::errors::{SqlError, SqlResult};

/// A `jsonb` argument, not read yet.
pub struct JsonbArg {
    datum: pg_sys::Datum,
}

/// What the document is, from its root container's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Array(usize),
    Object(usize),
    Scalar,
}

impl FromDatum for JsonbArg {
    /// # Safety
    /// `datum` is a jsonb datum of the current call (or `is_null`); it is
    /// kept, not read.
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(JsonbArg { datum })
    }
}

// SAFETY: the function's SQL signature says `jsonb` (SqlTranslatable below),
// so PostgreSQL passes a jsonb datum, which `from_polymorphic_datum` keeps
// without reading it; a NULL is never unboxed as a value.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbArg {
    /// # Safety
    /// `arg` is an argument of the current call, of SQL type jsonb.
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: as above.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

// SAFETY: a JsonbArg is exactly a jsonb datum, in and (never) out.
unsafe impl SqlTranslatable for JsonbArg {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(JsonbArg);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// The most a small document (a policy, what-if changes, a collection's
/// config) may have: far more than any real one, and at most about 25 MB once
/// parsed.
pub const SMALL_DOCUMENT: usize = 1 << 20;

/// `\0`-free key names for `getKeyJsonValueFromContainer`.
const SOURCE: &str = "source";
const TARGET: &str = "target";
const CAPACITY: &str = "capacity";

impl JsonbArg {
    fn varlena(&self) -> *mut pg_sys::varlena {
        self.datum.cast_mut_ptr()
    }

    /// The document's size in bytes, uncompressed, without detoasting it.
    pub fn size(&self) -> usize {
        // SAFETY: the datum is a live varlena for the whole call.
        unsafe { pg_sys::toast_raw_datum_size(self.datum) }
    }

    /// The root container's kind and element count, from its first four bytes
    /// (only those are fetched and decompressed).
    pub fn root(&self) -> Root {
        // SAFETY: a jsonb's data starts with its root container's 32-bit
        // header; the slice is a fresh 4-byte-header varlena holding those
        // bytes (read unaligned: a copy carries no alignment promise).
        let header = unsafe {
            let slice = pg_sys::pg_detoast_datum_slice(self.varlena(), 0, 4);
            let data = pgrx::vardata_any(slice).cast::<u32>();
            let header = data.read_unaligned();
            if slice != self.varlena() {
                pg_sys::pfree(slice.cast());
            }
            header
        };
        let count = (header & pg_sys::JB_CMASK) as usize;
        if header & pg_sys::JB_FSCALAR != 0 {
            Root::Scalar
        } else if header & pg_sys::JB_FARRAY != 0 {
            Root::Array(count)
        } else {
            Root::Object(count)
        }
    }

    /// The document as a `Value`, refused (`54000`) when it is larger than
    /// `limit` bytes: for small inputs (a policy, what-if changes, a config).
    pub fn small(&self, what: &str, limit: usize) -> SqlResult<Value> {
        let size = self.size();
        if size > limit {
            return Err(SqlError::new(
                pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("{what} is {size} bytes, more than the {limit} it may have"),
            ));
        }
        // SAFETY: a small jsonb printed by its own output function; the text
        // is PostgreSQL's, valid JSON in the server encoding.
        let text = unsafe {
            let detoasted = pg_sys::pg_detoast_datum(self.varlena());
            let out = pgrx::direct_function_call_as_datum(
                pg_sys::jsonb_out,
                &[Some(pg_sys::Datum::from(detoasted))],
            )
            .ok_or_else(|| SqlError::internal("jsonb_out returned NULL"))?;
            let cstr = std::ffi::CStr::from_ptr(out.cast_mut_ptr::<c_char>());
            let text = cstr.to_string_lossy().into_owned();
            pg_sys::pfree(out.cast_mut_ptr());
            text
        };
        serde_json::from_str(&text).map_err(SqlError::from)
    }

    /// Reads the root array's elements into `reader`, one at a time, straight
    /// from the binary document. The caller checked [`JsonbArg::root`].
    ///
    /// The document is fetched (and decompressed) as a growing prefix, never
    /// further than the element being read: the first window holds the
    /// container's offsets and the first [`FIRST_WINDOW`] bytes of elements,
    /// and each next one is twice as long. A bad element early in a large
    /// document is refused having fetched little more than the offsets
    /// (4 bytes an element); a good document costs at most two copies of
    /// itself, in the call's memory context, which PostgreSQL accounts for.
    pub fn read_edges(&self, count: usize, reader: &mut EdgeListReader) -> Result<(), Error> {
        let total = self.size().saturating_sub(pg_sys::VARHDRSZ);
        // The root's header, then one 4-byte JEntry per element.
        let offsets = 4 + 4 * count;
        let mut window = total.min(offsets + FIRST_WINDOW);
        let mut prefix = Prefix::fetch(self, window);
        for i in 0..count {
            // SAFETY: the prefix holds the root's header and every JEntry, so
            // the offset and length of element i are read from within it.
            let end = offsets
                + unsafe {
                    pg_sys::getJsonbOffset(prefix.root, i as i32) as usize
                        + pg_sys::getJsonbLength(prefix.root, i as i32) as usize
                };
            if end > window {
                window = total.min(end.max(2 * window));
                prefix = Prefix::fetch(self, window);
            }
            // SAFETY: element i lies within the prefix (it ends at `end`), and
            // every pointer into it is used before the prefix is replaced.
            unsafe {
                let element = pg_sys::getIthJsonbValueFromContainer(prefix.root, i as u32);
                let edge = edge(element);
                let pushed = reader.push(edge.as_ref().map(Edge::as_ref));
                pg_sys::pfree(element.cast());
                pushed?;
            }
        }
        Ok(())
    }
}

/// Bytes of elements in the first window of [`JsonbArg::read_edges`].
const FIRST_WINDOW: usize = 64 * 1024;

/// The first bytes of a jsonb document, fetched and decompressed: a root
/// container whose elements are readable as far as the prefix reaches.
struct Prefix {
    slice: *mut pg_sys::varlena,
    root: *mut pg_sys::JsonbContainer,
}

impl Prefix {
    fn fetch(document: &JsonbArg, bytes: usize) -> Prefix {
        // SAFETY: a fresh palloc'd copy with a 4-byte header, so its data (the
        // root container) is int-aligned as jsonb containers must be.
        unsafe {
            let slice = pg_sys::pg_detoast_datum_slice(document.varlena(), 0, bytes as i32);
            let root = pgrx::vardata_any(slice)
                .cast_mut()
                .cast::<pg_sys::JsonbContainer>();
            Prefix { slice, root }
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // SAFETY: `slice` was palloc'd by `fetch` and nothing points into it
        // once the prefix is dropped.
        unsafe { pg_sys::pfree(self.slice.cast()) };
    }
}

/// An element of an edge list, its strings copied out of the document only
/// where PostgreSQL had to make them (numbers' text).
struct Edge {
    source: Option<Node>,
    target: Option<Node>,
    capacity: Option<CapacityRef>,
    unknown_key: Option<String>,
}

enum Node {
    /// Points into the document, which outlives the `Edge`.
    Text(*const u8, usize),
    Number(String),
    Other,
}

impl Edge {
    fn as_ref(&self) -> EdgeRef<'_> {
        EdgeRef {
            source: self.source.as_ref().map(Node::as_ref),
            target: self.target.as_ref().map(Node::as_ref),
            capacity: self.capacity,
            unknown_key: self.unknown_key.as_deref(),
        }
    }
}

impl Node {
    fn as_ref(&self) -> NodeRef<'_> {
        match self {
            Node::Text(ptr, len) => {
                // SAFETY: the bytes of a jsonb string in the live document,
                // which outlives this node; PostgreSQL checked them as text of
                // the server encoding (anything but UTF-8 is not a name here).
                let bytes = unsafe { std::slice::from_raw_parts(*ptr, *len) };
                match std::str::from_utf8(bytes) {
                    Ok(s) => NodeRef::Text(s),
                    Err(_) => NodeRef::Other,
                }
            }
            Node::Number(s) => NodeRef::Number(s),
            Node::Other => NodeRef::Other,
        }
    }
}

/// The edge `element` holds; `None` when it is not an object.
///
/// # Safety
/// `element` is a JsonbValue of a live document.
unsafe fn edge(element: *mut pg_sys::JsonbValue) -> Option<Edge> {
    // SAFETY: per the function's contract; the key lookups read the
    // container, and copy each value found into a zeroed JsonbValue.
    unsafe {
        if (*element).type_ != pg_sys::jbvType::jbvBinary {
            return None;
        }
        let container = (*element).val.binary.data;
        let header = (*container).header;
        if header & pg_sys::JB_FOBJECT == 0 {
            return None;
        }
        let mut found = 0;
        let mut lookup = |key: &str| -> Option<pg_sys::JsonbValue> {
            let mut value: pg_sys::JsonbValue = std::mem::zeroed();
            let hit = pg_sys::getKeyJsonValueFromContainer(
                container,
                key.as_ptr().cast(),
                key.len() as i32,
                &mut value,
            );
            (!hit.is_null()).then(|| {
                found += 1;
                value
            })
        };
        let (source, target, capacity) = (lookup(SOURCE), lookup(TARGET), lookup(CAPACITY));
        let keys = (header & pg_sys::JB_CMASK) as usize;
        Some(Edge {
            source: source.map(|v| node(&v)),
            target: target.map(|v| node(&v)),
            capacity: capacity.map(|v| self::capacity(&v)),
            unknown_key: (keys > found).then(|| unknown_key(container)).flatten(),
        })
    }
}

/// A node id as read.
///
/// # Safety
/// `value` is a scalar JsonbValue of a live document.
unsafe fn node(value: &pg_sys::JsonbValue) -> Node {
    // SAFETY: per the function's contract; the union is read as its tag
    // says, and the normalized text is a palloc'd C string freed here.
    unsafe {
        match value.type_ {
            pg_sys::jbvType::jbvString => {
                let s = value.val.string;
                Node::Text(s.val.cast::<u8>(), s.len as usize)
            }
            pg_sys::jbvType::jbvNumeric => {
                // Trailing zeros dropped: 1 and 1.0 name one node.
                let text = pg_sys::numeric_normalize(value.val.numeric);
                let number = std::ffi::CStr::from_ptr(text)
                    .to_string_lossy()
                    .into_owned();
                pg_sys::pfree(text.cast());
                Node::Number(number)
            }
            _ => Node::Other,
        }
    }
}

/// A capacity as read: numbers beyond f64's range become ±∞ (and are refused).
///
/// # Safety
/// `value` is a scalar JsonbValue of a live document.
unsafe fn capacity(value: &pg_sys::JsonbValue) -> CapacityRef {
    // SAFETY: per the function's contract; a numeric is read as one.
    unsafe {
        if value.type_ != pg_sys::jbvType::jbvNumeric {
            return CapacityRef::Other;
        }
        match pgrx::direct_function_call::<f64>(
            pg_sys::numeric_float8_no_overflow,
            &[Some(pg_sys::Datum::from(value.val.numeric))],
        ) {
            Some(float) => CapacityRef::Number(float),
            None => CapacityRef::Other,
        }
    }
}

/// The first key of the object `container` that an edge may not have.
///
/// # Safety
/// `container` is an object container of a live document.
unsafe fn unknown_key(container: *mut pg_sys::JsonbContainer) -> Option<String> {
    // SAFETY: per the function's contract; the iterator walks the container
    // (not recursing), and a key's bytes are in the live document.
    unsafe {
        let mut iterator = pg_sys::JsonbIteratorInit(container);
        let mut value: pg_sys::JsonbValue = std::mem::zeroed();
        loop {
            match pg_sys::JsonbIteratorNext(&mut iterator, &mut value, true) {
                pg_sys::JsonbIteratorToken::WJB_DONE => return None,
                pg_sys::JsonbIteratorToken::WJB_KEY => {
                    let s = value.val.string;
                    let key = std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize);
                    if ![SOURCE, TARGET, CAPACITY].contains(&&*String::from_utf8_lossy(key)) {
                        return Some(String::from_utf8_lossy(key).into_owned());
                    }
                }
                _ => {}
            }
        }
    }
}

/// A jsonb built in place by [`object`], returned as it is.
pub struct Built(pg_sys::Datum);

// SAFETY: the datum is a Jsonb palloc'd in the call's memory context by
// `object`, returned to PostgreSQL as the call's result.
unsafe impl BoxRet for Built {
    /// # Safety
    /// `fcinfo` is the call this value is the result of.
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: per the impl's comment.
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

// SAFETY: a Built is exactly a jsonb datum, out only.
unsafe impl SqlTranslatable for Built {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Built);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// A value of a flat object.
pub enum Scalar<'a> {
    Bool(bool),
    Text(&'a str),
    Int(i64),
    /// Written as serde_json writes it (shortest round trip, `1.0` for 1);
    /// not finite is null.
    Float(f64),
}

/// A string JsonbValue over `text`, which must outlive its use.
fn string(text: &str) -> pg_sys::JsonbValue {
    let mut value = pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvString,
        ..Default::default()
    };
    value.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
        len: text.len() as i32,
        val: text.as_ptr().cast_mut().cast::<c_char>(),
    };
    value
}

/// A numeric JsonbValue of `number`.
fn numeric(number: pg_sys::Numeric) -> pg_sys::JsonbValue {
    let mut value = pg_sys::JsonbValue {
        type_: pg_sys::jbvType::jbvNumeric,
        ..Default::default()
    };
    value.val.numeric = number;
    value
}

/// The jsonb object of `fields` (keys distinct), built in place.
pub fn object(fields: &[(&str, Scalar)]) -> Built {
    // SAFETY: the parse state and every value pushed live in the current
    // memory context until JsonbValueToJsonb copies them into the result;
    // the strings pushed are borrowed from `fields`, alive throughout; a
    // float's text is a NUL-terminated Rust string, alive for its numeric_in.
    unsafe {
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
            std::ptr::null_mut(),
        );
        for (key, scalar) in fields {
            let mut key = string(key);
            pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_KEY, &mut key);
            let null = pg_sys::JsonbValue {
                type_: pg_sys::jbvType::jbvNull,
                ..Default::default()
            };
            let mut value = match *scalar {
                Scalar::Bool(b) => {
                    let mut value = pg_sys::JsonbValue {
                        type_: pg_sys::jbvType::jbvBool,
                        ..Default::default()
                    };
                    value.val.boolean = b;
                    value
                }
                Scalar::Text(text) => string(text),
                Scalar::Int(n) => numeric(pg_sys::int64_to_numeric(n)),
                Scalar::Float(x) if !x.is_finite() => null,
                Scalar::Float(x) => {
                    let text = std::ffi::CString::new(format!("{x:?}")).unwrap_or_default();
                    let args = [
                        text.as_c_str().into_datum(),
                        pg_sys::InvalidOid.into_datum(),
                        (-1i32).into_datum(),
                    ];
                    match pgrx::direct_function_call_as_datum(pg_sys::numeric_in, &args) {
                        Some(number) => numeric(number.cast_mut_ptr()),
                        None => null,
                    }
                }
            };
            pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_VALUE,
                &mut value,
            );
        }
        let built = pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
            std::ptr::null_mut(),
        );
        Built(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(built)))
    }
}
