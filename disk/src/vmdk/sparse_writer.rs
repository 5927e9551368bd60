//! Writing a monolithicSparse VMDK into a file: header, descriptor, grain directory and every
//! grain table up front (so the file can later be streamed in order), then the uncompressed
//! grains in disk order. All-zero and unallocated grains are left out.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::descriptor;
use super::header::{SparseHeader, SECTOR};
use super::stream_writer::{table_bytes, DESCRIPTOR_SECTORS, GTES_PER_GT};
use super::WriteVmdkError;
use crate::chain::Progress;
use crate::source::CopySource;

/// Writes `source` into `file` (empty, seekable) as a monolithicSparse VMDK whose descriptor
/// names `file_name`; returns the file's length.
pub fn write_monolithic_sparse(
    source: &mut CopySource,
    file_name: &str,
    file: &File,
    progress: Progress,
) -> Result<u64, WriteVmdkError> {
    let header = sparse_header(source.capacity())?;
    let gd_sectors = (header.gd_entries() * 4).div_ceil(SECTOR);
    let first_gt = header.gd_offset + gd_sectors;
    let gd: Vec<u32> = (0..header.gd_entries())
        .map(|i| u32::try_from(first_gt + i * header.gt_sectors()))
        .collect::<Result<_, _>>()
        .map_err(|_| WriteVmdkError::TooLarge("the grain tables".into()))?;
    let put = |bytes: &[u8], sector: u64| {
        file.write_all_at(bytes, sector * SECTOR)
            .map_err(WriteVmdkError::Write)
    };
    put(&header.encode(), 0)?;
    let text = descriptor::build_sparse("monolithicSparse", header.capacity, file_name);
    if text.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
        return Err(WriteVmdkError::TooLarge("the descriptor".into()));
    }
    put(text.as_bytes(), header.descriptor_offset)?;
    put(&table_bytes(&gd, gd_sectors), header.gd_offset)?;

    let mut gt = vec![0u32; GTES_PER_GT as usize];
    let mut gt_index = 0u64;
    let mut next = header.overhead;
    source.for_each_data_chunk(header.grain_bytes(), progress, |offset, data| {
        let lba = offset / SECTOR;
        let index = lba / header.sectors_per_gt();
        if index != gt_index {
            put(
                &table_bytes(&gt, header.gt_sectors()),
                u64::from(gd[gt_index as usize]),
            )?;
            gt.fill(0);
            gt_index = index;
        }
        let entry = ((lba % header.sectors_per_gt()) / header.grain_size) as usize;
        gt[entry] = u32::try_from(next)
            .map_err(|_| WriteVmdkError::TooLarge("the VMDK file (over 2 TiB)".into()))?;
        put(data, next)?;
        next += header.grain_size;
        Ok::<_, WriteVmdkError>(())
    })?;
    if !gd.is_empty() {
        put(
            &table_bytes(&gt, header.gt_sectors()),
            u64::from(gd[gt_index as usize]),
        )?;
    }
    let len = next * SECTOR;
    file.set_len(len).map_err(WriteVmdkError::Write)?;
    file.sync_all().map_err(WriteVmdkError::Write)?;
    Ok(len)
}

/// The header of a monolithicSparse file of `capacity` bytes: metadata, then grains.
fn sparse_header(capacity: u64) -> Result<SparseHeader, WriteVmdkError> {
    let mut header = SparseHeader {
        gd_offset: 1 + DESCRIPTOR_SECTORS,
        ..super::written_header(capacity)?
    };
    let gd_sectors = (header.gd_entries() * 4).div_ceil(SECTOR);
    let metadata = header.gd_offset + gd_sectors + header.gd_entries() * header.gt_sectors();
    header.overhead = metadata.next_multiple_of(header.grain_size);
    Ok(header)
}
