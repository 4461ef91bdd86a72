//! Enum fields in config files: the number (as crictl's Go structs take) or
//! the protobuf name (`"NODE"`, `"TCP"`), checked while parsing so that a bad
//! value is reported with its field path.

use std::fmt;
use std::marker::PhantomData;

use k8s_cri::v1::{
    security_profile, MountPropagation, NamespaceMode, Protocol, SupplementalGroupsPolicy,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A protobuf enum the config files may name.
pub trait ProtoEnum: Sized {
    /// The enum's name in messages.
    const NAME: &'static str;
    /// The value for a known number.
    fn from_number(n: i32) -> Option<Self>;
    /// The value for a protobuf name.
    fn from_name(s: &str) -> Option<Self>;
    /// The wire number.
    fn number(self) -> i32;
}

macro_rules! proto_enum {
    ($ty:ty, $name:literal) => {
        impl ProtoEnum for $ty {
            const NAME: &'static str = $name;
            fn from_number(n: i32) -> Option<Self> {
                <$ty>::try_from(n).ok()
            }
            fn from_name(s: &str) -> Option<Self> {
                <$ty>::from_str_name(s)
            }
            fn number(self) -> i32 {
                self as i32
            }
        }
    };
}

proto_enum!(NamespaceMode, "NamespaceMode");
proto_enum!(Protocol, "Protocol");
proto_enum!(MountPropagation, "MountPropagation");
proto_enum!(SupplementalGroupsPolicy, "SupplementalGroupsPolicy");
proto_enum!(security_profile::ProfileType, "ProfileType");

/// A checked enum value; the default is the enum's zero value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enum<E>(pub i32, PhantomData<E>);

impl<E> Default for Enum<E> {
    fn default() -> Self {
        Enum(0, PhantomData)
    }
}

impl<E> From<Enum<E>> for i32 {
    fn from(value: Enum<E>) -> i32 {
        value.0
    }
}

impl<'de, E: ProtoEnum> Deserialize<'de> for Enum<E> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<E>(PhantomData<E>);
        impl<E: ProtoEnum> Visitor<'_> for V<E> {
            type Value = Enum<E>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a {} number or name", E::NAME)
            }
            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Self::Value, Er> {
                i32::try_from(v)
                    .ok()
                    .and_then(E::from_number)
                    .map(|e| Enum(e.number(), PhantomData))
                    .ok_or_else(|| Er::custom(format!("{v} is not a valid {}", E::NAME)))
            }
            fn visit_u64<Er: de::Error>(self, v: u64) -> Result<Self::Value, Er> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<Er: de::Error>(self, v: &str) -> Result<Self::Value, Er> {
                E::from_name(v)
                    .map(|e| Enum(e.number(), PhantomData))
                    .ok_or_else(|| Er::custom(format!("{v:?} is not a valid {}", E::NAME)))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}
