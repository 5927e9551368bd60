//! Routes for concurrent requests (see `crate::shared`): which guest ranges of a qcow2 image
//! plain positional I/O on the image file can serve without touching metadata.

use std::fs::File;
use std::path::Path;

use super::image::Qcow2Image;
use super::l2::ClusterMapping;
use crate::block::{check_range, BlockError};
use crate::shared::{push_segment, HostExtent, RoutableDevice, Segment};

impl RoutableDevice for Qcow2Image {
    fn data_file(&self) -> std::io::Result<File> {
        self.file.file().try_clone()
    }

    fn data_path(&self) -> &Path {
        self.file.path()
    }

    /// Data and zero clusters route; backing-file and compressed clusters do not.
    fn read_route(&mut self, offset: u64, len: u64) -> Result<Option<Vec<Segment>>, BlockError> {
        check_range(offset, len, self.header.size)?;
        let mut route = Vec::new();
        let pieces: Vec<_> = self.pieces(offset, len).collect();
        for (cluster, within, _, n) in pieces {
            let segment = match self.mapping(cluster)? {
                ClusterMapping::Data { host, .. } => Segment::File(HostExtent {
                    host: host + within,
                    len: n,
                }),
                ClusterMapping::Zero { .. } => Segment::Zeros(n),
                ClusterMapping::Unallocated if !self.has_backing() => Segment::Zeros(n),
                ClusterMapping::Unallocated | ClusterMapping::Compressed { .. } => return Ok(None),
            };
            push_segment(&mut route, segment);
        }
        Ok(Some(route))
    }

    /// Only clusters this image owns alone (the COPIED flag) are overwritten in place.
    fn write_route(
        &mut self,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<HostExtent>>, BlockError> {
        self.check_writable(offset, len)?;
        let mut route: Vec<HostExtent> = Vec::new();
        let pieces: Vec<_> = self.pieces(offset, len).collect();
        for (cluster, within, _, n) in pieces {
            let ClusterMapping::Data { host, copied: true } = self.mapping(cluster)? else {
                return Ok(None);
            };
            let host = host + within;
            match route.last_mut() {
                Some(last) if last.host + last.len as u64 == host => last.len += n,
                _ => route.push(HostExtent { host, len: n }),
            }
        }
        self.mark_bitmaps(offset, len);
        let end = route.iter().map(|e| e.host + e.len as u64).max();
        self.file_len = self.file_len.max(end.unwrap_or(0));
        Ok(Some(route))
    }
}
