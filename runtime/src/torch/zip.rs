//! The zip archive `torch.save` writes (torch ≥ 1.6): stored entries only, Zip64 aware, every
//! offset checked against the file.

use std::collections::HashMap;
use std::ops::Range;

use super::pickle::{shown, Vm};
use super::state_dict::collect;
use super::{bad, TorchTensor};
use crate::{Error, Result};

/// One central-directory entry.
pub(super) struct ZipEntry {
    name: String,
    flags: u16,
    method: u16,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
}

pub(super) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

pub(super) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

pub(super) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// `start..start + len` when it lies inside `0..limit`.
pub(super) fn span(start: u64, len: u64, limit: usize) -> Option<Range<usize>> {
    let start = usize::try_from(start).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= limit).then_some(start..end)
}

pub(super) fn corrupt_zip(what: &str) -> Error {
    bad(format!("the zip archive is truncated or corrupt ({what})"))
}

/// The central directory's entries (Zip64 aware).
pub(super) fn zip_entries(bytes: &[u8]) -> Result<Vec<ZipEntry>> {
    // end of central directory: 22 bytes + a comment of up to 65,535 bytes, scanned backwards
    let last = bytes.len().checked_sub(22).ok_or_else(|| corrupt_zip("shorter than an end-of-central-directory record"))?;
    let first = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (first..=last)
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06") && le_u16(bytes, i + 20).is_some_and(|comment| i + 22 + usize::from(comment) <= bytes.len()))
        .ok_or_else(|| corrupt_zip("no end-of-central-directory record"))?;
    let field16 = |at: usize| le_u16(bytes, eocd + at).ok_or_else(|| corrupt_zip("end-of-central-directory record"));
    let field32 = |at: usize| le_u32(bytes, eocd + at).ok_or_else(|| corrupt_zip("end-of-central-directory record"));
    let (disk, cd_disk) = (field16(4)?, field16(6)?);
    let mut count = u64::from(field16(10)?);
    let mut cd_size = u64::from(field32(12)?);
    let mut cd_offset = u64::from(field32(16)?);
    let multi_disk = disk != 0 || cd_disk != 0;
    let locator = eocd.checked_sub(20).filter(|&l| bytes[l..].starts_with(b"PK\x06\x07"));
    let multi_disk = if let Some(l) = locator {
        let bad = || corrupt_zip("Zip64 end-of-central-directory record");
        let record = le_u64(bytes, l + 8).ok_or_else(bad)?;
        let record = span(record, 56, bytes.len()).ok_or_else(bad)?.start;
        if !bytes[record..].starts_with(b"PK\x06\x06") {
            return Err(bad());
        }
        count = le_u64(bytes, record + 32).ok_or_else(bad)?;
        cd_size = le_u64(bytes, record + 40).ok_or_else(bad)?;
        cd_offset = le_u64(bytes, record + 48).ok_or_else(bad)?;
        multi_disk || le_u32(bytes, record + 16) != Some(0) || le_u32(bytes, record + 20) != Some(0)
    } else if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        return Err(corrupt_zip("Zip64 sizes without a Zip64 locator"));
    } else {
        multi_disk
    };
    if multi_disk {
        return Err(bad("multi-disk zip archives are not supported"));
    }
    let cd = span(cd_offset, cd_size, bytes.len()).ok_or_else(|| corrupt_zip("central directory out of bounds"))?;
    let cd = &bytes[cd];
    if count > (cd.len() / 46) as u64 {
        return Err(corrupt_zip("more entries than the central directory can hold"));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut p = 0usize;
    for _ in 0..count {
        let bad = || corrupt_zip("central directory entry");
        if !cd.get(p..).is_some_and(|rest| rest.starts_with(b"PK\x01\x02")) {
            return Err(bad());
        }
        let flags = le_u16(cd, p + 8).ok_or_else(bad)?;
        let method = le_u16(cd, p + 10).ok_or_else(bad)?;
        let mut compressed = u64::from(le_u32(cd, p + 20).ok_or_else(bad)?);
        let mut uncompressed = u64::from(le_u32(cd, p + 24).ok_or_else(bad)?);
        let name_len = usize::from(le_u16(cd, p + 28).ok_or_else(bad)?);
        let extra_len = usize::from(le_u16(cd, p + 30).ok_or_else(bad)?);
        let comment_len = usize::from(le_u16(cd, p + 32).ok_or_else(bad)?);
        let mut local_offset = u64::from(le_u32(cd, p + 42).ok_or_else(bad)?);
        let name = cd.get(p + 46..p + 46 + name_len).ok_or_else(bad)?;
        let extra = cd.get(p + 46 + name_len..p + 46 + name_len + extra_len).ok_or_else(bad)?;
        // Zip64 extended information: the 64-bit values of the fields set to 0xFFFFFFFF, in this order
        let mut e = 0usize;
        while e + 4 <= extra.len() {
            let id = le_u16(extra, e).ok_or_else(bad)?;
            let size = usize::from(le_u16(extra, e + 2).ok_or_else(bad)?);
            let body = extra.get(e + 4..e + 4 + size).ok_or_else(bad)?;
            if id == 1 {
                let mut q = 0usize;
                for field in [&mut uncompressed, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = le_u64(body, q).ok_or_else(bad)?;
                        q += 8;
                    }
                }
            }
            e += 4 + size;
        }
        entries.push(ZipEntry { name: String::from_utf8_lossy(name).into_owned(), flags, method, compressed, uncompressed, local_offset });
        p += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// The byte range of a stored entry's contents (located through its local header).
pub(super) fn entry_data(bytes: &[u8], entry: &ZipEntry) -> Result<Range<usize>> {
    if entry.method != 0 || entry.compressed != entry.uncompressed {
        return Err(bad(format!(
            "its entry {} is compressed (zip method {}); only uncompressed (stored) entries can be read — re-save the checkpoint with torch.save",
            shown(&entry.name),
            entry.method
        )));
    }
    if entry.flags & 1 != 0 {
        return Err(bad(format!("its entry {} is encrypted", shown(&entry.name))));
    }
    let bad = || corrupt_zip(&format!("local header of {}", shown(&entry.name)));
    let header = span(entry.local_offset, 30, bytes.len()).ok_or_else(bad)?.start;
    if !bytes[header..].starts_with(b"PK\x03\x04") {
        return Err(bad());
    }
    let name_len = le_u16(bytes, header + 26).ok_or_else(bad)?;
    let extra_len = le_u16(bytes, header + 28).ok_or_else(bad)?;
    let name = span(header as u64 + 30, u64::from(name_len), bytes.len()).ok_or_else(bad)?;
    if &bytes[name] != entry.name.as_bytes() {
        return Err(corrupt_zip(&format!("the local header of {} names another file", shown(&entry.name))));
    }
    let start = header as u64 + 30 + u64::from(name_len) + u64::from(extra_len);
    span(start, entry.uncompressed, bytes.len()).ok_or_else(|| corrupt_zip(&format!("the data of {} runs past the end", shown(&entry.name))))
}

pub(super) fn read_zip(bytes: &[u8]) -> Result<Vec<TorchTensor>> {
    let entries = zip_entries(bytes)?;
    let mut by_name: HashMap<&str, &ZipEntry> = HashMap::with_capacity(entries.len());
    for entry in &entries {
        if by_name.insert(entry.name.as_str(), entry).is_some() {
            return Err(bad(format!("its zip archive has two entries named {}", shown(&entry.name))));
        }
    }
    let pickles: Vec<&ZipEntry> =
        entries.iter().filter(|e| e.name.split_once('/').is_some_and(|(prefix, file)| file == "data.pkl" && !prefix.is_empty())).collect();
    let pickle = match pickles.as_slice() {
        [one] => *one,
        [] => return Err(bad("its zip archive has no <folder>/data.pkl, so it is not a torch.save checkpoint")),
        _ => return Err(bad(format!("its zip archive has {} data.pkl files; a torch.save checkpoint has one", pickles.len()))),
    };
    let prefix = pickle.name.strip_suffix("data.pkl").unwrap_or_default();
    if let Some(entry) = by_name.get(format!("{prefix}byteorder").as_str()) {
        match bytes[entry_data(bytes, entry)?].trim_ascii() {
            b"little" => {}
            b"big" => return Err(bad("it stores big-endian tensors (byteorder = big); re-save it on a little-endian machine")),
            other => return Err(bad(format!("its byteorder entry says {:?}; expected little", String::from_utf8_lossy(other)))),
        }
    }
    let mut vm = Vm::default();
    let (top, _) = vm.load(&bytes[entry_data(bytes, pickle)?], 0)?;
    let mut ranges = Vec::with_capacity(vm.storages.len());
    for storage in &vm.storages {
        let name = format!("{prefix}data/{}", storage.key);
        let entry = by_name
            .get(name.as_str())
            .ok_or_else(|| bad(format!("its pickle uses storage \"{}\" but the archive has no {}", shown(&storage.key), shown(&name))))?;
        let range = entry_data(bytes, entry)?;
        if Some(range.len()) != storage.numel.checked_mul(storage.dtype.size()) {
            return Err(bad(format!(
                "its storage {} has {} bytes, but the pickle declares {} elements of {:?}",
                shown(&name),
                range.len(),
                storage.numel,
                storage.dtype
            )));
        }
        ranges.push(range);
    }
    collect(&vm, &top, &ranges, bytes)
}
