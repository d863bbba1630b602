//! Parameter declarations: a parameter's name, manifest type and range, default and one-line
//! doc, written once. [`params!`](crate::params) declares a typed struct and its
//! [`ParamSpec`]s together; manifest validation (with did-you-mean), the planner's key (every
//! resolved parameter, defaults filled in) and the stage (which decodes the resolved values into
//! the struct) all follow from that one declaration.
//!
//! Invariant: a stage never falls back to a default of its own. The struct has no defaults and
//! rejects unknown keys, so a renamed or missing key is an error, not a silent change.

use serde_json::Value as Json;

#[derive(Debug, Clone, Copy)]
pub enum ParamType {
    /// A float in `[min, max]` (or `(min, max]` when `min_exclusive`).
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
    },
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    Choice(&'static [&'static str]),
    /// Any non-empty string.
    Str,
    /// A list of strings (class names, templates, ...).
    StrList,
    /// Non-negative integers (distinct unless `repeats`): an inline list, or the path of a text
    /// file holding them (separated by whitespace or commas, optionally inside `[ ]`), relative
    /// to the manifest.
    IndexList {
        repeats: bool,
    },
    /// An existing file, relative to the manifest; resolved to an absolute path, and its
    /// content is part of the key of every stage that reads it.
    File,
}

#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'static str),
    /// No default: absent means "derived" (documented in `doc`), and is left out of the key.
    Derived,
    /// The grid point's calibration size (SparseGPT's block size, spec Decision 2), made
    /// explicit by the planner so it is part of the key.
    CalibrationSize,
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: DefaultValue,
    pub doc: &'static str,
}

impl DefaultValue {
    pub fn to_json(self) -> Option<Json> {
        match self {
            DefaultValue::Float(v) => Some(Json::from(v)),
            DefaultValue::Int(v) => Some(Json::from(v)),
            DefaultValue::Bool(v) => Some(Json::from(v)),
            DefaultValue::Str(v) => Some(Json::from(v)),
            DefaultValue::Derived | DefaultValue::CalibrationSize => None,
        }
    }
}

pub const fn p(
    name: &'static str,
    ty: ParamType,
    default: DefaultValue,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        default,
        doc,
    }
}

/// An integer in `[min, max]`.
pub const fn int(min: i64, max: i64) -> ParamType {
    ParamType::Int { min, max }
}

/// A float in `[min, max]`.
pub const fn float(min: f64, max: f64) -> ParamType {
    ParamType::Float {
        min,
        max,
        min_exclusive: false,
    }
}

/// A float in `(min, max]`.
pub const fn positive(min: f64, max: f64) -> ParamType {
    ParamType::Float {
        min,
        max,
        min_exclusive: true,
    }
}

/// A typed parameter struct declared with [`params!`](crate::params).
pub trait TypedParams: Sized + serde::de::DeserializeOwned + serde::Serialize {
    /// The struct's fields as manifest parameters, in declaration order.
    const SPECS: &'static [ParamSpec];

    /// Decodes resolved parameters (the planner filled every default in).
    fn decode(resolved: &Json) -> Result<Self, String> {
        serde_json::from_value(resolved.clone()).map_err(|e| format!("stage parameters: {e}"))
    }
}

/// Declares a parameter struct and its [`ParamSpec`]s in one place. Each field is written as
/// `/// doc` `name: Type = (ParamType, DefaultValue)`; a field whose default is
/// `DefaultValue::Derived` has an `Option` type.
#[macro_export]
macro_rules! params {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = ($pty:expr, $default:expr)
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl $crate::manifest::params::TypedParams for $name {
            const SPECS: &'static [$crate::manifest::params::ParamSpec] = &[
                $( $crate::manifest::params::ParamSpec {
                    name: stringify!($field),
                    ty: $pty,
                    default: $default,
                    doc: concat!($($doc),+),
                }, )*
            ];
        }
    };
}

/// The resolved parameters a manifest that sets nothing gets (a calibration size stands in for
/// derived block sizes).
pub fn defaults_json(specs: &[ParamSpec], calibration_size: u32) -> Json {
    let mut map = serde_json::Map::new();
    for s in specs {
        let value = match s.default {
            DefaultValue::CalibrationSize => Some(Json::from(calibration_size)),
            d => d.to_json(),
        };
        if let Some(v) = value {
            map.insert(s.name.to_string(), v);
        }
    }
    Json::Object(map)
}

/// Checks that a declaration is consistent: its defaults decode, and so does every value of each
/// choice (so the manifest and the struct agree on names and spellings).
pub fn check_declaration<T: TypedParams>() -> Result<(), String> {
    let defaults = defaults_json(T::SPECS, 250);
    T::decode(&defaults)?;
    for s in T::SPECS {
        if let ParamType::Choice(values) = s.ty {
            for v in values {
                let mut json = defaults.clone();
                json[s.name] = Json::from(*v);
                T::decode(&json).map_err(|e| format!("{} = \"{v}\": {e}", s.name))?;
            }
        }
    }
    Ok(())
}
