//! The other ways of crossing the JS/Rust boundary, kept so the boundary
//! benchmark (bench/boundary.ts) can measure them against the wire codec in
//! the same run. Not part of the public API.
//!
//! - "walk": napi-rs converts the JS object to `serde_json::Value` by reading
//!   it property by property through N-API (and back the same way);
//! - "json": `JSON.stringify` in JS, `serde_json::from_str` here (and
//!   `serde_json::to_string` + `JSON.parse` back).

use napi::Result;
use napi_derive::napi;
use serde_json::Value as Json;
use shmtools_core::value::{Key, Value};
use shmtools_core::ErrorCode;

use crate::convert::{err, js};
use crate::region::NativeRegion;
use crate::value::{value_wire, Out, RegionRef};

fn from_json(v: &Json, depth: usize) -> Result<Value> {
    if depth > shmtools_core::value::wire::MAX_DEPTH {
        return Err(err(ErrorCode::InvalidArg, "nested too deeply"));
    }
    Ok(match v {
        Json::Null => Value::None,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Arr(
            a.iter()
                .map(|x| from_json(x, depth + 1))
                .collect::<Result<_>>()?,
        ),
        Json::Object(o) => Value::Tab(
            o.iter()
                .map(|(k, x)| Ok((Key::Str(k.clone()), from_json(x, depth + 1)?)))
                .collect::<Result<_>>()?,
        ),
    })
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::F32(f) => serde_json::Number::from_f64(*f as f64).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Arr(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Tab(t) => Json::Object(
            t.iter()
                .map(|(k, x)| {
                    let k = match k {
                        Key::Str(s) => s.clone(),
                        Key::Int(i) => i.to_string(),
                    };
                    (k, to_json(x))
                })
                .collect(),
        ),
        _ => Json::Null,
    }
}

fn store(region: &NativeRegion, v: &Json) -> Result<Out> {
    let wire = from_json(v, 0)?.encode().map_err(js)?;
    region.store(wire.into())
}

#[napi]
impl NativeRegion {
    /// Benchmark candidate: store a value napi-rs read property by property.
    #[napi(catch_unwind)]
    pub fn bench_store_walk(&self, value: Json) -> Result<Out> {
        store(self, &value)
    }

    /// Benchmark candidate: store a value given as JSON text.
    #[napi(catch_unwind)]
    pub fn bench_store_json(&self, json: String) -> Result<Out> {
        let v: Json =
            serde_json::from_str(&json).map_err(|e| err(ErrorCode::InvalidArg, e.to_string()))?;
        store(self, &v)
    }
}

/// Benchmark candidate: deep copy out as a JS value built through N-API.
#[napi(catch_unwind)]
pub fn bench_load_walk(r: &RegionRef, id: f64) -> Result<Json> {
    let wire = value_wire(r, id)?;
    Ok(to_json(&Value::decode(&wire).map_err(js)?))
}

/// Benchmark candidate: deep copy out as JSON text.
#[napi(catch_unwind)]
pub fn bench_load_json(r: &RegionRef, id: f64) -> Result<String> {
    let wire = value_wire(r, id)?;
    Ok(to_json(&Value::decode(&wire).map_err(js)?).to_string())
}
