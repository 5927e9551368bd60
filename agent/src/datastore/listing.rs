//! A datastore folder as `GET /folder/<path>` shows it: an HTML index like ESXi's datastore
//! browser page (parent link, then one row per entry with its link, modification time and
//! size). Names are HTML-escaped and percent-encoded in links.

use std::fmt::Write;

use super::files::EntryKind;
use crate::vm::datastore_path::DatastorePath;

/// One row of a folder listing.
pub struct Row {
    /// The entry's name.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: i64,
    /// Last modification, seconds since the epoch.
    pub modified: i64,
}

/// The HTML index of `folder` (on datacenter `dc_path`) listing `rows`.
pub fn html(folder: &DatastorePath, dc_path: &str, rows: &[Row]) -> String {
    let title = escape(&folder.to_string());
    let query = format!(
        "?dcPath={}&amp;dsName={}",
        percent_encode(dc_path),
        percent_encode(&folder.datastore)
    );
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Last modified</th><th>Size</th></tr>\n"
    );
    if !folder.path.is_empty() {
        let parent = folder.parent();
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{}{query}\">Parent Directory</a></td><td></td><td></td></tr>",
            href(&parent.path, true)
        );
    }
    for row in rows {
        let is_folder = row.kind == EntryKind::Folder;
        let link = href(&folder.join(&row.name).path, is_folder);
        let size = if is_folder {
            "-".to_string()
        } else {
            row.size.to_string()
        };
        let slash = if is_folder { "/" } else { "" };
        let _ = writeln!(
            page,
            "<tr><td><a href=\"{link}{query}\">{}{slash}</a></td><td align=\"right\">{}</td>\
             <td align=\"right\">{size}</td></tr>",
            escape(&row.name),
            http_date(row.modified),
        );
    }
    page.push_str("</table></body></html>\n");
    page
}

/// The `/folder` link of a datastore path (folders end with `/`).
fn href(path: &str, folder: bool) -> String {
    let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
    let tail = if folder && !path.is_empty() { "/" } else { "" };
    format!("/folder/{}{tail}", encoded.join("/"))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// HTML/XML-escapes text.
pub(crate) fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `dd-Mon-yyyy hh:mm` (UTC) of seconds since the epoch.
fn http_date(seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{day:02}-{}-{year} {:02}:{:02}",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60
    )
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_entries_escaped_with_links_back_to_folder() {
        let folder = DatastorePath::parse("[data store] iso <x>").unwrap();
        let rows = [
            Row {
                name: "a&b.iso".into(),
                kind: EntryKind::File,
                size: 2048,
                modified: 0,
            },
            Row {
                name: "sub".into(),
                kind: EntryKind::Folder,
                size: 4096,
                modified: 951_782_400,
            },
        ];
        let page = html(&folder, "ha-datacenter", &rows);
        assert!(page.contains("<title>Index of [data store] iso &lt;x&gt;</title>"));
        assert!(page.contains(
            "<a href=\"/folder/iso%20%3Cx%3E/a%26b.iso?dcPath=ha-datacenter&amp;dsName=data%20store\">a&amp;b.iso</a>"
        ));
        assert!(page.contains(">2048<"));
        assert!(page.contains("/folder/iso%20%3Cx%3E/sub/?"));
        assert!(page.contains("29-Feb-2000 00:00"));
        assert!(page.contains("01-Jan-1970 00:00"));
        assert!(page.contains("Parent Directory"));
    }
}
