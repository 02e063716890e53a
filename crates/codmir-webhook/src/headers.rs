//! Where a request's headers come from: whatever map the receiver's framework hands out.

use std::collections::HashMap;

/// Read access to request headers by name, case-insensitively (`name` is given lower-case).
pub trait Headers {
    /// The value of header `name`, if present and text.
    fn get(&self, name: &str) -> Option<&str>;
}

#[cfg(feature = "http")]
impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn get(&self, name: &str) -> Option<&str> {
        <[(K, V)] as Headers>::get(self.as_slice(), name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>, S> Headers for HashMap<K, V, S> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
}
