//! Query parameters as Clio reads them: repeated keys (`ids[]=1&ids[]=2`) allowed, unknown
//! ones ignored.

use url::form_urlencoded;

#[derive(Clone, Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Re-encodes the parameters without `dropped`, then with `added`.
    pub(crate) fn encode_replacing(&self, dropped: &[&str], added: &[(&str, String)]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.0 {
            if !dropped.contains(&key.as_str()) {
                out.append_pair(key, value);
            }
        }
        for (key, value) in added {
            out.append_pair(key, value);
        }
        out.finish()
    }
}
