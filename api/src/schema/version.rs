//! vim25 versions: which wire version ids exist, and which schema versions each client version
//! knows (a version knows its ancestors), so the encoder can leave out what a client cannot parse.

/// Index of a version in the schema's version table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionIdx(pub u8);

/// The version a client negotiated (an index of a version that has a wire id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientVersion(pub VersionIdx);

/// One version: its wire id (`8.0.3.0`) if it has one, and what it knows.
#[derive(Debug)]
pub struct VersionDef {
    /// Wire id sent in SOAPAction, e.g. `8.0.3.0`.
    pub wire_id: Option<Box<str>>,
    /// Bit i set when version i is this one or an ancestor.
    pub known: u64,
}

/// The version table.
#[derive(Debug, Default)]
pub struct Versions {
    pub(crate) defs: Vec<VersionDef>,
}

impl Versions {
    /// Whether a client of `client` knows things introduced in `version`.
    pub fn knows(&self, client: ClientVersion, version: VersionIdx) -> bool {
        self.defs[client.0 .0 as usize].known & (1u64 << version.0) != 0
    }

    /// The newest version, the one this schema was generated for.
    pub fn newest(&self) -> ClientVersion {
        ClientVersion(VersionIdx((self.defs.len() - 1) as u8))
    }

    /// The client version for a SOAPAction value such as `"urn:vim25/6.5"` (quotes optional);
    /// unknown, newer or missing versions map to the newest one we speak.
    pub fn from_soap_action(&self, soap_action: Option<&str>) -> ClientVersion {
        let wire = soap_action
            .map(|a| a.trim().trim_matches('"'))
            .and_then(|a| a.strip_prefix("urn:vim25/"));
        wire.and_then(|id| self.by_wire_id(id))
            .unwrap_or_else(|| self.newest())
    }

    /// The version with this wire id.
    pub fn by_wire_id(&self, id: &str) -> Option<ClientVersion> {
        // Newest first: clients mostly speak the newest version.
        self.defs
            .iter()
            .rposition(|d| d.wire_id.as_deref() == Some(id))
            .map(|i| ClientVersion(VersionIdx(i as u8)))
    }

    /// Wire ids of every version a client may pick, newest first.
    pub fn wire_ids(&self) -> impl Iterator<Item = &str> {
        self.defs.iter().rev().filter_map(|d| d.wire_id.as_deref())
    }
}
