use super::*;

/// `read` with its message alone, as the assertions below compare it.
fn read(bytes: &[u8]) -> std::result::Result<Vec<TorchTensor>, String> {
    super::read(bytes, "pytorch_model.bin").map_err(|e| match e {
        Error::Weights { path, message } if path == "pytorch_model.bin" => message,
        other => panic!("not a weights error naming the file: {other}"),
    })
}

const ZIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch/pytorch_model.bin");
const LEGACY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch-legacy/pytorch_model.bin");
const MALICIOUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch-malicious/pytorch_model.bin");
const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/bert-torch/expected.txt");
const SAFETENSORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures-bert/tiny-bert-mlm/model.safetensors");

/// FNV-1a 64 (make_torch_files.py computes the same).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn bytes_of<'a>(file: &'a [u8], t: &'a TorchTensor) -> &'a [u8] {
    match &t.data {
        TorchData::Range(r) => &file[r.clone()],
        TorchData::Owned(v) => v,
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn check_fixture(path: &str) {
    let file = std::fs::read(path).unwrap();
    assert!(is_torch(&file));
    let tensors = read(&file).unwrap();
    let expected = std::fs::read_to_string(EXPECTED).unwrap();
    let lines: Vec<&str> = expected.lines().collect();
    assert_eq!(tensors.len(), lines.len());
    assert_eq!(lines.len(), 60);
    for (t, line) in tensors.iter().zip(&lines) {
        let shape = t.shape.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        let got = format!("{} {:?} [{}] {:016x}", t.name, t.dtype, shape, fnv1a64(bytes_of(&file, t)));
        assert_eq!(&got, line, "{path}");
        assert!(matches!(t.data, TorchData::Range(_)), "{}: contiguous tensors are zero-copy", t.name);
    }
    let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap();
    let (decoder, embeddings) = (find("cls.predictions.decoder.weight"), find("bert.embeddings.word_embeddings.weight"));
    assert_eq!(decoder.shape, [320, 48]);
    assert_eq!(bytes_of(&file, decoder), bytes_of(&file, embeddings));
    assert_eq!(decoder.data, embeddings.data, "tied: the same bytes of the file");
    let positions = find("bert.embeddings.position_ids");
    assert_eq!((positions.dtype, positions.shape.as_slice()), (StoredDtype::I64, &[1usize, 64][..]));
    let ids: Vec<i64> = bytes_of(&file, positions).chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(ids, (0..64).collect::<Vec<i64>>());
}

#[test]
fn zip_fixture_matches_safetensors() {
    check_fixture(ZIP);
}

#[test]
fn legacy_fixture_matches_safetensors() {
    check_fixture(LEGACY);
}

/// expected.txt itself against model.safetensors (8-byte header length, JSON header, data), parsed minimally.
#[test]
fn expected_list_matches_safetensors() {
    let st = std::fs::read(SAFETENSORS).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&st[8..8 + n]).unwrap();
    let data = &st[8 + n..];
    let expected = std::fs::read_to_string(EXPECTED).unwrap();
    let mut checked = 0;
    for line in expected.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let name = fields[0];
        let Some(at) = header.find(&format!("\"{name}\":")) else {
            assert!(name == "cls.predictions.decoder.weight" || name == "bert.embeddings.position_ids", "{name}");
            continue;
        };
        let entry = &header[at..at + header[at..].find('}').unwrap()];
        let offsets = &entry[entry.find("\"data_offsets\":[").unwrap() + 16..];
        let offsets: Vec<usize> = offsets[..offsets.find(']').unwrap()].split(',').map(|s| s.trim().parse().unwrap()).collect();
        let shape = &entry[entry.find("\"shape\":[").unwrap() + 9..];
        let shape: String = shape[..shape.find(']').unwrap()].chars().filter(|c| !c.is_whitespace()).collect();
        assert!(entry.contains("\"dtype\":\"F32\""));
        assert_eq!(fields[1], "F32");
        assert_eq!(fields[2], format!("[{shape}]"));
        assert_eq!(fields[3], format!("{:016x}", fnv1a64(&data[offsets[0]..offsets[1]])), "{name}");
        checked += 1;
    }
    assert_eq!(checked, 58);
}

#[test]
fn malicious_fixture_is_refused_without_running_it() {
    let file = std::fs::read(MALICIOUS).unwrap();
    assert!(is_torch(&file));
    let err = read(&file).unwrap_err();
    assert!(err.contains("posix.system") || err.contains("os.system"), "{err}");
    assert!(err.contains("never runs code"), "{err}");
    assert!(!std::path::Path::new("/tmp/SHOULD_NOT_EXIST_torch_pickle").exists());
}

#[test]
fn sniffing() {
    assert!(!is_torch(b""));
    assert!(!is_torch(&std::fs::read(SAFETENSORS).unwrap()));
    assert!(!is_torch(b"\x80\x02}q\x00."));
    assert!(read(b"").unwrap_err().contains("not a PyTorch checkpoint"));
    assert!(read(b"\x80\x02}.").unwrap_err().contains("not a PyTorch checkpoint"));
}

#[test]
fn every_truncation_is_an_error() {
    for path in [ZIP, LEGACY, MALICIOUS] {
        let file = std::fs::read(path).unwrap();
        for k in 0..64 {
            let len = file.len() * k / 64;
            assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
        }
        // and every cut inside the pickle(s) and headers at the start
        for len in 0..file.len().min(8000) {
            assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
        }
        // and every cut of the zip's tail (central directory, Zip64 records)
        for len in file.len().saturating_sub(8000)..file.len() {
            assert!(read(&file[..len]).is_err(), "{path} cut at {len}");
        }
    }
}

/// Byte flips never panic (they may or may not be detected: the data bytes are not checksummed).
#[test]
fn byte_flips_never_panic() {
    for path in [ZIP, LEGACY] {
        let mut file = std::fs::read(path).unwrap();
        let n = file.len();
        let positions: Vec<usize> = (0..n.min(8000)).chain((8000..n).step_by(61)).chain(n.saturating_sub(5000)..n).collect();
        for i in positions {
            for flip in if i % 4 == 0 { &[0xff, 0x01, 0x80][..] } else { &[0xff] } {
                file[i] ^= flip;
                let _ = read(&file);
                file[i] ^= flip;
            }
        }
        assert!(read(&file).is_ok());
    }
}

/// Random byte changes and cuts (xorshift, fixed seed) of small hand-built files and of the fixtures' pickles.
#[test]
fn random_mutations_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let small =
        [torch_zip(&views(false), &[("0", floats(6)), ("1", floats(1))], b"little", true), legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], true)];
    for base in &small {
        assert!(read(base).is_ok());
        for _ in 0..20_000 {
            let mut file = base.clone();
            for _ in 0..1 + next() % 4 {
                let i = next() % file.len();
                file[i] = next() as u8;
            }
            if next() % 4 == 0 {
                file.truncate(next() % file.len());
            }
            let _ = read(&file);
        }
    }
    for path in [ZIP, LEGACY] {
        let mut file = std::fs::read(path).unwrap();
        for _ in 0..3000 {
            let i = next() % 8000;
            let old = file[i];
            file[i] = next() as u8;
            let _ = read(&file);
            file[i] = old;
        }
    }
}

// --- hand-built files -------------------------------------------------------------------------------

/// A stored zip like torch's: 64-byte-aligned data through padding extra fields; optionally with Zip64 fields.
fn zip(entries: &[(&str, &[u8], u16)], zip64: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data, method) in entries {
        let offset = out.len();
        let pad = (64 - (offset + 30 + name.len() + 4) % 64) % 64;
        out.extend_from_slice(b"PK\x03\x04");
        for v in [20u16, 0, *method, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, data.len() as u32, data.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&(4 + pad as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"FB");
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, b'Z');
        out.extend_from_slice(data);

        let big = |v: u32| if zip64 { 0xFFFF_FFFF } else { v };
        central.extend_from_slice(b"PK\x01\x02");
        for v in [45u16, 45, 0, *method, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, big(data.len() as u32), big(data.len() as u32)] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        for v in [name.len() as u16, if zip64 { 28 } else { 0 }, 0, 0, 0] {
            central.extend_from_slice(&v.to_le_bytes());
        }
        central.extend_from_slice(&0u32.to_le_bytes());
        central.extend_from_slice(&big(offset as u32).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
        if zip64 {
            central.extend_from_slice(&1u16.to_le_bytes());
            central.extend_from_slice(&24u16.to_le_bytes());
            for v in [data.len() as u64, data.len() as u64, offset as u64] {
                central.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let (cd_offset, cd_size, n) = (out.len(), central.len(), entries.len());
    out.extend_from_slice(&central);
    if zip64 {
        let record = out.len();
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&45u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        for v in [n as u64, n as u64, cd_size as u64, cd_offset as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(b"PK\x06\x07");
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(record as u64).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n16 = if zip64 { 0xFFFF } else { n as u16 };
    out.extend_from_slice(&n16.to_le_bytes());
    out.extend_from_slice(&n16.to_le_bytes());
    let (size32, offset32) = if zip64 { (0xFFFF_FFFF, 0xFFFF_FFFF) } else { (cd_size as u32, cd_offset as u32) };
    out.extend_from_slice(&size32.to_le_bytes());
    out.extend_from_slice(&offset32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A torch.save-like archive: archive/data.pkl, byteorder, the storages as archive/data/<key>, version.
fn torch_zip(pickle: &[u8], storages: &[(&str, Vec<u8>)], byteorder: &[u8], zip64: bool) -> Vec<u8> {
    let names: Vec<String> = storages.iter().map(|(key, _)| format!("archive/data/{key}")).collect();
    let mut entries: Vec<(&str, &[u8], u16)> = vec![("archive/data.pkl", pickle, 0), ("archive/byteorder", byteorder, 0)];
    for (name, (_, data)) in names.iter().zip(storages) {
        entries.push((name, data, 0));
    }
    entries.push(("archive/version", b"3\n", 0));
    zip(&entries, zip64)
}

/// A pickle writer.
struct Pk(Vec<u8>);

impl Pk {
    fn new() -> Pk {
        Pk(vec![0x80, 2])
    }
    fn op(mut self, op: u8) -> Pk {
        self.0.push(op);
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Pk {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(self, module: &str, name: &str) -> Pk {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }
    fn s(self, s: &str) -> Pk {
        self.op(b'X').raw(&(s.len() as u32).to_le_bytes()).raw(s.as_bytes())
    }
    fn int(self, i: i32) -> Pk {
        self.op(b'J').raw(&i.to_le_bytes())
    }
    fn ints(self, v: &[i32]) -> Pk {
        v.iter().fold(self.op(b'('), |p, &i| p.int(i)).op(b't')
    }
    fn ordered_dict(self) -> Pk {
        self.global("collections", "OrderedDict").op(b')').op(b'R')
    }
    /// `_rebuild_tensor_v2(('storage', torch.FloatStorage, key, 'cpu', numel[, None]), offset, size, stride, False, OrderedDict())`
    fn tensor(self, key: &str, numel: i32, offset: i32, size: &[i32], stride: &[i32], legacy: bool) -> Pk {
        let p = self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        let p = p.op(b'(').s("storage").global("torch", "FloatStorage").s(key).s("cpu").int(numel);
        let p = if legacy { p.op(b'N') } else { p };
        p.op(b't').op(b'Q').int(offset).ints(size).ints(stride).op(0x89).ordered_dict().op(b't').op(b'R')
    }
    /// `OrderedDict()` + SETITEMS of what `items` writes + STOP.
    fn state_dict(items: impl FnOnce(Pk) -> Pk) -> Vec<u8> {
        items(Pk::new().ordered_dict().op(b'(')).op(b'u').op(b'.').0
    }
}

fn floats(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

/// A 2x3 storage [0..6) seen as "w" (contiguous), "t" (transposed view) and "s" (offset 1, stride 2).
fn views(legacy: bool) -> Vec<u8> {
    Pk::state_dict(|p| {
        p.s("w")
            .tensor("0", 6, 0, &[2, 3], &[3, 1], legacy)
            .s("t")
            .tensor("0", 6, 0, &[3, 2], &[1, 3], legacy)
            .s("s")
            .tensor("0", 6, 1, &[2], &[2], legacy)
            .s("scalar")
            .tensor("1", 1, 0, &[], &[], legacy)
            .s("empty")
            .tensor("1", 1, 1, &[0, 4], &[4, 1], legacy)
    })
}

fn check_views(file: &[u8]) {
    let tensors = read(file).unwrap();
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w", "t", "s", "scalar", "empty"]);
    assert!(matches!(tensors[0].data, TorchData::Range(_)));
    assert_eq!(f32s(bytes_of(file, &tensors[0])), [0., 1., 2., 3., 4., 5.]);
    assert!(matches!(tensors[1].data, TorchData::Owned(_)));
    assert_eq!(tensors[1].shape, [3, 2]);
    assert_eq!(f32s(bytes_of(file, &tensors[1])), [0., 3., 1., 4., 2., 5.]);
    assert_eq!(f32s(bytes_of(file, &tensors[2])), [1., 3.]);
    assert_eq!(tensors[3].shape, Vec::<usize>::new());
    assert_eq!(f32s(bytes_of(file, &tensors[3])), [0.]);
    assert_eq!((tensors[4].shape.as_slice(), bytes_of(file, &tensors[4]).len()), (&[0usize, 4][..], 0));
}

#[test]
fn strided_views_zip_and_zip64() {
    for zip64 in [false, true] {
        let file = torch_zip(&views(false), &[("0", floats(6)), ("1", floats(1))], b"little", zip64);
        check_views(&file);
    }
}

/// magic, protocol version, sys_info, the state dict, the key list, then count + bytes per key.
fn legacy(main: &[u8], storages: &[(&str, Vec<u8>)], little_endian: bool) -> Vec<u8> {
    let mut out = vec![0x80, 2, 0x8a, 10];
    out.extend_from_slice(&LEGACY_MAGIC);
    out.push(b'.');
    out.extend_from_slice(b"\x80\x02M\xe9\x03.");
    out.extend(Pk::new().op(b'}').s("little_endian").op(if little_endian { 0x88 } else { 0x89 }).op(b's').op(b'.').0);
    out.extend_from_slice(main);
    out.extend(storages.iter().fold(Pk::new().op(b']').op(b'('), |p, (key, _)| p.s(key)).op(b'e').op(b'.').0);
    for (_, data) in storages {
        out.extend_from_slice(&(data.len() as u64 / 4).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

#[test]
fn strided_views_legacy() {
    let file = legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], true);
    assert!(is_torch(&file));
    check_views(&file);
    let file = legacy(&views(true), &[("1", floats(1)), ("0", floats(6))], false);
    assert!(read(&file).unwrap_err().contains("big-endian"));
    let err = read(&legacy(&views(true), &[("0", floats(6))], true)).unwrap_err();
    assert!(err.contains("\"1\""), "{err}");
    let err = read(&legacy(&views(true), &[("1", floats(1)), ("0", floats(5))], true)).unwrap_err();
    assert!(err.contains("5 elements"), "{err}");
    // a storage view (non-None view_metadata)
    let main = Pk::state_dict(|p| {
        let p = p.s("v").global("torch._utils", "_rebuild_tensor_v2").op(b'(');
        let p = p.op(b'(').s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(6).ints(&[0, 1]).op(b't').op(b'Q');
        p.int(0).ints(&[1]).ints(&[1]).op(0x89).ordered_dict().op(b't').op(b'R')
    });
    let err = read(&legacy(&main, &[("0", floats(6))], true)).unwrap_err();
    assert!(err.contains("view"), "{err}");
}

/// Protocol-4 opcodes (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE), _rebuild_parameter, a BUILD with
/// _metadata and the tied tensor memoised with LONG_BINPUT / LONG_BINGET.
#[test]
fn protocol_4_parameters_and_ties() {
    let short = |p: Pk, s: &str| p.op(0x8c).op(s.len() as u8).raw(s.as_bytes());
    let mut p = Pk(vec![0x80, 4, 0x95]).raw(&[0; 8]);
    p = short(short(p, "collections"), "OrderedDict").op(0x93).op(0x94).op(b')').op(b'R').op(b'(');
    p = short(short(p, "a"), "torch._utils");
    p = short(p, "_rebuild_parameter").op(0x93).op(b'(');
    p = p.tensor("k", 4, 0, &[2, 2], &[2, 1], false).op(b'r').raw(&7u32.to_le_bytes());
    p = p.op(0x88).ordered_dict().op(b't').op(b'R');
    p = short(p, "b").op(b'j').raw(&7u32.to_le_bytes()).op(b'u');
    p = p.op(b'}').s("_metadata").op(b'}').s("").op(b'}').s("version").op(b'K').op(1).op(b's').op(b's').op(b's').op(b'b').op(b'.');
    let file = torch_zip(&p.0, &[("k", floats(4))], b"little\n", false);
    let tensors = read(&file).unwrap();
    assert_eq!(tensors.len(), 2);
    assert_eq!((tensors[0].name.as_str(), tensors[1].name.as_str()), ("a", "b"));
    assert_eq!(tensors[0].data, tensors[1].data);
    assert_eq!(f32s(bytes_of(&file, &tensors[1])), [0., 1., 2., 3.]);
}

fn refused(pickle: &[u8]) -> String {
    let file = torch_zip(pickle, &[("0", floats(6))], b"little", false);
    read(&file).unwrap_err()
}

#[test]
fn refuses_posix_system() {
    let p = Pk::new().global("posix", "system").s("touch /tmp/SHOULD_NOT_EXIST_torch_pickle").op(0x85).op(b'R').op(b'.');
    let err = refused(&p.0);
    assert!(err.contains("posix.system at byte 2"), "{err}");
    assert!(err.contains("never runs code"), "{err}");
    assert!(!std::path::Path::new("/tmp/SHOULD_NOT_EXIST_torch_pickle").exists());
}

#[test]
fn refuses_builtins_eval_via_stack_global() {
    let p = Pk::new().s("builtins").s("eval").op(0x93).s("1+1").op(0x85).op(b'R').op(b'.');
    let err = refused(&p.0);
    assert!(err.contains("builtins.eval at byte 24"), "{err}");
}

#[test]
fn refuses_other_globals() {
    for (module, name) in [
        ("torch._utils", "_rebuild_qtensor"),
        ("torch.storage", "_load_from_bytes"),
        ("__builtin__", "getattr"),
        ("os", "system"),
        ("torch", "_utils._rebuild_tensor_v2"),
    ] {
        let err = refused(&Pk::new().global(module, name).op(b'.').0);
        assert!(err.contains(&format!("{module}.{name} at byte 2")), "{err}");
    }
    let err = refused(&Pk::new().global("torch", "BoolStorage").op(b'.').0);
    assert!(err.contains("torch.BoolStorage") && err.contains("not supported"), "{err}");
    // a long name is shortened in the message
    let err = refused(&Pk::new().s("os").s(&"x".repeat(5000)).op(0x93).op(b'.').0);
    assert!(err.len() < 400 && err.contains("os.xxx") && err.contains('…'), "{err}");
    // a control character in a name is escaped in the message
    let err = refused(&Pk::new().global("os\r", "system").op(b'.').0);
    assert!(err.contains("os\\r.system"), "{err}");
}

#[test]
fn refuses_code_running_opcodes() {
    for (bytes, name) in [
        (&b"\x80\x02(ios\nsystem\nX\x01\x00\x00\x00x."[..], "INST (0x69) at byte 3"),
        (b"\x80\x02)\x81.", "NEWOBJ (0x81) at byte 3"),
        (b"\x80\x02)}\x92.", "NEWOBJ_EX"),
        (b"\x80\x02(o.", "OBJ"),
        (b"\x80\x02P1\n.", "PERSID"),
        (b"\x80\x02\x82\x01.", "EXT1"),
        (b"\x80\x02\x83\x01\x00.", "EXT2"),
        (b"\x80\x02\x84\x01\x00\x00\x00.", "EXT4"),
        (b"\x80\x02\x96\x00\x00\x00\x00\x00\x00\x00\x00.", "BYTEARRAY8"),
        (b"\x80\x02N2.", "DUP"),
        (b"\x80\x02\xff.", "unknown opcode 0xff at byte 2"),
    ] {
        let err = refused(bytes);
        assert!(err.contains(name), "{name}: {err}");
    }
}

#[test]
fn refuses_tensor_larger_than_its_storage() {
    let p = Pk::state_dict(|p| p.s("big").tensor("0", 6, 0, &[7], &[1], false));
    let err = refused(&p);
    assert!(err.contains("\"big\"") && err.contains("does not fit"), "{err}");
    let p = Pk::state_dict(|p| p.s("late").tensor("0", 6, 5, &[2, 1], &[1, 1], false));
    assert!(refused(&p).contains("does not fit"));
    let p = Pk::state_dict(|p| p.s("neg").tensor("0", 6, 0, &[2], &[-1], false));
    assert!(refused(&p).contains("stride"));
    let p = Pk::state_dict(|p| p.s("huge").tensor("0", 6, 0, &[1 << 30, 1 << 30, 1 << 30], &[0, 0, 0], false));
    assert!(refused(&p).contains("too large"));
    // the storage must have exactly numel * element size bytes
    let p = Pk::state_dict(|p| p.s("x").tensor("0", 5, 0, &[5], &[1], false));
    assert!(refused(&p).contains("24 bytes"));
    // and must exist
    let p = Pk::state_dict(|p| p.s("x").tensor("9", 6, 0, &[6], &[1], false));
    assert!(refused(&p).contains("archive/data/9"));
}

#[test]
fn refuses_compressed_entries() {
    let pickle = Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false));
    let data = floats(6);
    let file = zip(&[("archive/data.pkl", &pickle, 0), ("archive/data/0", &data, 8)], false);
    let err = read(&file).unwrap_err();
    assert!(err.contains("archive/data/0 is compressed") && err.contains("torch.save"), "{err}");
}

#[test]
fn refuses_big_endian() {
    let pickle = Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false));
    let err = read(&torch_zip(&pickle, &[("0", floats(6))], b"big", false)).unwrap_err();
    assert!(err.contains("big-endian"), "{err}");
    assert!(read(&torch_zip(&pickle, &[("0", floats(6))], b"middle", false)).is_err());
}

#[test]
fn refuses_non_tensor_values() {
    let err = refused(&Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false).s("step").int(5)));
    assert!(err.contains("\"step\"") && err.contains("int, not a tensor"), "{err}");
    let err = refused(&Pk::state_dict(|p| p.s("nested").ordered_dict()));
    assert!(err.contains("\"nested\"") && err.contains("dict"), "{err}");
    let err = refused(&Pk::new().op(b']').op(b'.').0);
    assert!(err.contains("list, not a state dict"), "{err}");
    let err = refused(&Pk::state_dict(|p| p.s("w").tensor("0", 6, 0, &[6], &[1], false).s("w").tensor("0", 6, 0, &[6], &[1], false)));
    assert!(err.contains("twice"), "{err}");
}

#[test]
fn refuses_bad_archives() {
    let pickle = Pk::state_dict(|p| p);
    assert!(read(&zip(&[("archive/data.pkl", &pickle, 0)], false)).unwrap().is_empty());
    let two = zip(&[("a/data.pkl", &pickle, 0), ("b/data.pkl", &pickle, 0)], false);
    assert!(read(&two).unwrap_err().contains("2 data.pkl"));
    let none = zip(&[("a/model.pkl", &pickle, 0)], false);
    assert!(read(&none).unwrap_err().contains("no <folder>/data.pkl"));
    let dup = zip(&[("a/data.pkl", &pickle, 0), ("a/data.pkl", &pickle, 0)], false);
    assert!(read(&dup).unwrap_err().contains("two entries"));
    // a storage id that is not ('storage', type, key, location, numel)
    let p = Pk::new().op(b'(').s("module").s("x").op(b't').op(b'Q').op(b'.');
    assert!(refused(&p.0).contains("persistent id at byte"));
}

/// No recursion: a million nested lists, marks and memo entries are fine (and bounded), not a stack overflow.
#[test]
fn deep_nesting_is_iterative() {
    let depth = 1_000_000;
    let mut p = Pk::new();
    p.0.resize(p.0.len() + depth, b']');
    p.0.resize(p.0.len() + depth - 1, b'a');
    let err = refused(&p.op(b'.').0);
    assert!(err.contains("list, not a state dict"), "{err}");
    let mut p = Pk::new();
    p.0.resize(p.0.len() + depth, b'(');
    assert!(refused(&p.op(b'.').0).contains("empty stack"));
    let mut p = Pk::new().op(b'N');
    for i in 0..100_000u32 {
        p = p.op(b'r').raw(&i.wrapping_mul(2_654_435_761).to_le_bytes());
    }
    assert!(refused(&p.op(b'.').0).contains("None, not a state dict"));
}

#[test]
fn malformed_pickles_are_errors() {
    for bytes in [
        &b"\x80\x02."[..],
        b"\x80\x02h\x05.",
        b"\x80\x02Nu.",
        b"\x80\x02(N}u.",
        b"\x80\x02NNa.",
        b"\x80\x02}NNNu.",
        b"\x80\x02X\xff\xff\xff\xff",
        b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x80\x02T\xff\xff\xff\xff",
        b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00.",
        b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",
        b"\x80\x09.",
        b"\x80\x02ccollections\nOrderedDict",
        b"\x80\x02NN\x93.",
        b"\x80\x02ccollections\nOrderedDict\nN\x85R.",
        b"\x80\x02ccollections\nOrderedDict\nNR.",
        b"\x80\x02NNR.",
        b"\x80\x02ctorch\nFloatStorage\n)R.",
        b"\x80\x02}Nb.",
        b"\x80\x02]}b.",
        b"\x80\x02(N.",
    ] {
        assert!(refused(bytes).starts_with("its pickle"), "{bytes:?}: {}", refused(bytes));
    }
    // the memo: out-of-order indices, then the dense slot catching up with a sparse one, then overwrites
    let mut vm = Vm::default();
    let p = b"\x80\x02K\x05q\x01K\x06q\x00K\x07q\x01K\x08q\x00\x94h\x00h\x01h\x02\x87.";
    let (v, _) = vm.load(p, 0).unwrap();
    let items: Vec<i64> = vm.tuple(&v).unwrap().iter().map(|v| if let Value::Int(i) = v { *i } else { -1 }).collect();
    assert_eq!(items, [8, 7, 8]);
    assert!(vm.load(b"\x80\x02Nq\x01h\x00.", 0).unwrap_err().to_string().contains("memo entry 0"));
    // LONG1 sign extension
    let mut vm = Vm::default();
    assert!(matches!(vm.load(b"\x80\x02\x8a\x02\xff\xff.", 0).unwrap().0, Value::Int(-1)));
    assert!(matches!(vm.load(b"\x80\x02\x8a\x02\xff\x7f.", 0).unwrap().0, Value::Int(32767)));
    assert!(matches!(vm.load(b"\x80\x02\x8a\x00.", 0).unwrap().0, Value::Int(0)));
}
