//! Routes for concurrent requests (see `crate::shared`): which guest ranges of a qcow2 image
//! plain positional I/O on the image file can serve without touching metadata, and writes
//! into one fresh cluster prepared so that their data is written outside the lock.

use std::fs::File;
use std::path::Path;

use super::image::Qcow2Image;
use super::l2::{ClusterMapping, COPIED};
use crate::block::{check_range, BlockError};
use crate::shared::{push_segment, HostExtent, PreparedWrite, RoutableDevice, Segment};

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

    /// Writes within one cluster that holds no storage (unallocated or zero) get a fresh
    /// cluster holding the request merged into what the cluster read as before.
    fn prepare_write(
        &mut self,
        offset: u64,
        buf: &[u8],
    ) -> Result<Option<PreparedWrite>, BlockError> {
        let len = buf.len() as u64;
        self.check_writable(offset, len)?;
        let cs = self.cluster_size();
        let (cluster, within) = (offset >> self.cluster_bits, offset & (cs - 1));
        if len == 0 || within + len > cs || self.preparing.contains(&cluster) {
            return Ok(None);
        }
        let mapping = self.mapping(cluster)?;
        if !matches!(
            mapping,
            ClusterMapping::Unallocated | ClusterMapping::Zero { host: None }
        ) {
            return Ok(None);
        }
        let mut data = vec![0u8; cs as usize];
        if len < cs {
            self.read_in_cluster(cluster, 0, &mut data)?;
        }
        data[within as usize..(within + len) as usize].copy_from_slice(buf);
        let host = self.allocate(1)?;
        self.mark_bitmaps(offset, len);
        self.preparing.insert(cluster);
        Ok(Some(PreparedWrite {
            host,
            data,
            key: cluster,
        }))
    }

    fn commit_write(
        &mut self,
        write: PreparedWrite,
        written: Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        self.preparing.remove(&write.key);
        if let Err(e) = written {
            self.free_cluster(write.host >> self.cluster_bits)?;
            return Err(e);
        }
        self.file_len = self.file_len.max(write.host + self.cluster_size());
        let old = self.mapping(write.key)?;
        self.set_l2_entry(write.key, write.host | COPIED, old)
    }
}
