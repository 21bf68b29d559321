//! A Redis reply as the procedures see it. There is no error variant: an
//! error reply is an [`crate::Error::Reply`], so it cannot be overlooked.

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Value>),
    Double(f64),
}

impl Value {
    /// The reply as text, for bulk and status strings.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Status(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            v => v.text()?.parse().ok(),
        }
    }

    pub fn array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A flat field/value list (SENTINEL MASTER, ...) as text pairs; None
    /// for anything else.
    pub fn pairs(&self) -> Option<Vec<(String, String)>> {
        let items = self.array()?;
        Some(
            items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((k.text()?, v.text()?)),
                    _ => None,
                })
                .collect(),
        )
    }
}
