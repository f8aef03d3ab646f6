//! The pickle machine: iterative, allowlisted (only the globals that rebuild tensors), every
//! length, index and count checked, memory bounded.

use std::collections::HashMap;
use std::rc::Rc;

use super::{bad, StoredDtype, LEGACY_MAGIC, MAX_GLOBAL_LINE, MAX_MEMO, MAX_NDIM, MAX_OBJECTS, MAX_STACK};
use crate::Result;

/// A pickle value. Containers live in [`Vm::objects`] and are referred to by index, so values are cheap to
/// copy (BINGET) and nothing is recursive.
#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float (its value is never needed).
    Float,
    Str(Rc<str>),
    Global(Callable),
    Storage(usize),
    Tensor(usize),
    Obj(usize),
    LegacyMagic,
}

/// A container built by the pickle.
pub(super) enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion order; keys are not deduplicated (the state dict is checked for duplicates instead).
    Dict(Vec<(Value, Value)>),
}

/// The only globals a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Callable {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StoredDtype),
}

/// A storage named by a persistent id.
pub(super) struct StorageDecl {
    pub(super) key: Rc<str>,
    pub(super) dtype: StoredDtype,
    pub(super) numel: usize,
}

/// A `_rebuild_tensor_v2` call (a view of a storage; checked against it later).
pub(super) struct TensorDecl {
    pub(super) storage: usize,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// What the pickles built, shared by the legacy format's successive pickles.
#[derive(Default)]
pub(super) struct Vm {
    pub(super) objects: Vec<Obj>,
    pub(super) storages: Vec<StorageDecl>,
    pub(super) storage_index: HashMap<Rc<str>, usize>,
    pub(super) tensors: Vec<TensorDecl>,
}

/// The name of a pickle opcode, for messages.
pub(super) fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// `n` bytes at `pos`, advancing it.
pub(super) fn take<'a>(data: &'a [u8], pos: &mut usize, n: usize, at: usize) -> Result<&'a [u8]> {
    match pos.checked_add(n) {
        Some(end) if end <= data.len() => {
            let s = &data[*pos..end];
            *pos = end;
            Ok(s)
        }
        _ => Err(bad(format!("its pickle is truncated: the opcode at byte {at} runs past the end"))),
    }
}

pub(super) fn take_array<const N: usize>(data: &[u8], pos: &mut usize, at: usize) -> Result<[u8; N]> {
    take(data, pos, N, at)?.try_into().map_err(|_| bad(format!("its pickle is truncated at byte {at}")))
}

/// A GLOBAL operand line (up to its newline).
pub(super) fn take_line<'a>(data: &'a [u8], pos: &mut usize, at: usize) -> Result<&'a [u8]> {
    let rest = data.get(*pos..).unwrap_or_default();
    let n = rest
        .iter()
        .take(MAX_GLOBAL_LINE + 1)
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad(format!("its pickle's GLOBAL at byte {at} has no (or too long a) module or name")))?;
    let line = &rest[..n];
    *pos += n + 1;
    Ok(line)
}

pub(super) fn text(bytes: &[u8], at: usize) -> Result<Rc<str>> {
    std::str::from_utf8(bytes).map(Rc::from).map_err(|_| bad(format!("its pickle has a string that is not UTF-8 at byte {at}")))
}

/// `module.name`, escaped and shortened for a message.
pub(super) fn global_name(module: &str, name: &str) -> String {
    shown(&format!("{module}.{name}"))
}

/// A string from the file, escaped and shortened for a message.
pub(super) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(200).flat_map(char::escape_debug).collect();
    if s.chars().nth(200).is_some() {
        out.push('…');
    }
    out
}

/// The allowlist: the Rust stand-in for a global, or the refusal.
pub(super) fn resolve_global(module: &str, name: &str, at: usize) -> Result<Value> {
    let callable = match (module, name) {
        ("collections", "OrderedDict") => Some(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Callable::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Callable::RebuildParameter),
        ("torch", storage) => StoredDtype::from_torch_storage(storage).map(Callable::Storage),
        _ => None,
    };
    match callable {
        Some(c) => Ok(Value::Global(c)),
        None if module == "torch" && name.ends_with("Storage") && !name.contains('.') => Err(bad(format!(
            "its pickle names {} at byte {at}: tensors of that type are not supported (only float32/64, float16, bfloat16, int64/32 and uint8)",
            global_name(module, name)
        ))),
        None => Err(bad(format!(
            "its pickle names {} at byte {at}; only the globals that rebuild tensors are allowed (this loader never runs code from a file)",
            global_name(module, name)
        ))),
    }
}

/// The memo: indices are normally 0, 1, 2, … (kept in a vector); any others go to a map.
#[derive(Default)]
pub(super) struct Memo {
    pub(super) dense: Vec<Value>,
    pub(super) sparse: HashMap<u32, Value>,
}

impl Memo {
    pub(super) fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    pub(super) fn get(&self, i: u32) -> Option<&Value> {
        self.dense.get(i as usize).or_else(|| self.sparse.get(&i))
    }

    pub(super) fn insert(&mut self, i: u32, v: Value, at: usize) -> Result<()> {
        let index = i as usize;
        if let Some(slot) = self.dense.get_mut(index) {
            *slot = v;
            return Ok(());
        }
        if self.len() >= MAX_MEMO && !self.sparse.contains_key(&i) {
            return Err(bad(format!("its pickle's memo grows past {MAX_MEMO} entries (at byte {at})")));
        }
        if index == self.dense.len() {
            self.sparse.remove(&i);
            self.dense.push(v);
        } else {
            self.sparse.insert(i, v);
        }
        Ok(())
    }
}

/// One pickle's stack machine state.
pub(super) struct Machine<'v> {
    pub(super) vm: &'v mut Vm,
    pub(super) stack: Vec<Value>,
    pub(super) marks: Vec<usize>,
    pub(super) memo: Memo,
}

impl Vm {
    pub(super) fn kind(&self, v: &Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::LegacyMagic => "int",
            Value::Float => "float",
            Value::Str(_) => "string",
            Value::Global(_) => "callable",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Tuple(_)) => "tuple",
                Some(Obj::List(_)) => "list",
                Some(Obj::Dict(_)) => "dict",
                None => "object",
            },
        }
    }

    pub(super) fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Dict(entries)) => Some(entries),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn list(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::List(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match self.objects.get(*i) {
                Some(Obj::Tuple(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    pub(super) fn new_obj(&mut self, obj: Obj) -> Result<Value> {
        if self.objects.len() + self.tensors.len() >= MAX_OBJECTS {
            return Err(bad(format!("its pickle builds more than {MAX_OBJECTS} objects")));
        }
        self.objects.push(obj);
        Ok(Value::Obj(self.objects.len() - 1))
    }

    /// Runs one pickle starting at `start`; returns its value and the position after its STOP.
    pub(super) fn load(&mut self, data: &[u8], start: usize) -> Result<(Value, usize)> {
        let mut m = Machine { vm: self, stack: Vec::new(), marks: Vec::new(), memo: Memo::default() };
        let mut pos = start;
        loop {
            let at = pos;
            let op = *data.get(pos).ok_or_else(|| bad(format!("its pickle is truncated: it ends at byte {at} without STOP")))?;
            pos += 1;
            match op {
                0x80 => {
                    let [version] = take_array(data, &mut pos, at)?;
                    if version > 5 {
                        return Err(bad(format!("its pickle has an unknown protocol version {version} at byte {at}")));
                    }
                }
                0x95 => {
                    take_array::<8>(data, &mut pos, at)?; // FRAME: a read-ahead hint only
                }
                b'.' => {
                    let value = m.pop(at)?;
                    return Ok((value, pos));
                }
                b'(' => {
                    if m.marks.len() >= MAX_STACK {
                        return Err(bad(format!("its pickle has too many MARKs (at byte {at})")));
                    }
                    m.marks.push(m.stack.len());
                }
                b')' => m.push_obj(Obj::Tuple(Vec::new()))?,
                b']' => m.push_obj(Obj::List(Vec::new()))?,
                b'}' => m.push_obj(Obj::Dict(Vec::new()))?,
                b't' => {
                    let items = m.pop_mark(at)?;
                    m.push_obj(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(m.pop(at)?);
                    }
                    items.reverse();
                    m.push_obj(Obj::Tuple(items))?;
                }
                b'a' => {
                    let item = m.pop(at)?;
                    m.list_on_top(at)?.push(item);
                }
                b'e' => {
                    let items = m.pop_mark(at)?;
                    m.list_on_top(at)?.extend(items);
                }
                b's' => {
                    let value = m.pop(at)?;
                    let key = m.pop(at)?;
                    m.dict_on_top(at)?.push((key, value));
                }
                b'u' => {
                    let items = m.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(bad(format!("its pickle's SETITEMS at byte {at} has an odd number of items")));
                    }
                    let dict = m.dict_on_top(at)?;
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.push((k, v));
                    }
                }
                b'q' => {
                    let [i] = take_array(data, &mut pos, at)?;
                    m.put(u32::from(i), at)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    m.put(i, at)?;
                }
                0x94 => {
                    let i = u32::try_from(m.memo.len()).map_err(|_| bad(format!("its pickle's memo is full at byte {at}")))?;
                    m.put(i, at)?;
                }
                b'h' => {
                    let [i] = take_array(data, &mut pos, at)?;
                    m.get(u32::from(i), at)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    m.get(i, at)?;
                }
                b'J' => m.push(Value::Int(i64::from(i32::from_le_bytes(take_array(data, &mut pos, at)?))))?,
                b'K' => m.push(Value::Int(i64::from(take_array::<1>(data, &mut pos, at)?[0])))?,
                b'M' => m.push(Value::Int(i64::from(u16::from_le_bytes(take_array(data, &mut pos, at)?))))?,
                0x8a => {
                    let [n] = take_array(data, &mut pos, at)?;
                    let digits = take(data, &mut pos, usize::from(n), at)?;
                    let value = if digits.len() <= 8 {
                        let negative = digits.last().is_some_and(|&b| b & 0x80 != 0);
                        let mut buf = if negative { [0xff; 8] } else { [0; 8] };
                        buf[..digits.len()].copy_from_slice(digits);
                        Value::Int(i64::from_le_bytes(buf))
                    } else if digits == LEGACY_MAGIC {
                        Value::LegacyMagic
                    } else {
                        return Err(bad(format!("its pickle has an integer of {n} bytes at byte {at}; at most 8 are supported")));
                    };
                    m.push(value)?;
                }
                b'G' => {
                    take_array::<8>(data, &mut pos, at)?;
                    m.push(Value::Float)?;
                }
                b'N' => m.push(Value::None)?,
                0x88 => m.push(Value::Bool(true))?,
                0x89 => m.push(Value::Bool(false))?,
                b'X' => {
                    let n = u32::from_le_bytes(take_array(data, &mut pos, at)?);
                    let s = text(take(data, &mut pos, n as usize, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                0x8c | b'U' => {
                    let [n] = take_array(data, &mut pos, at)?;
                    let s = text(take(data, &mut pos, usize::from(n), at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                0x8d => {
                    let n = u64::from_le_bytes(take_array(data, &mut pos, at)?);
                    let n = usize::try_from(n).map_err(|_| bad(format!("its pickle is truncated: the opcode at byte {at} runs past the end")))?;
                    let s = text(take(data, &mut pos, n, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                b'T' => {
                    let n = i32::from_le_bytes(take_array(data, &mut pos, at)?);
                    let n = usize::try_from(n).map_err(|_| bad(format!("its pickle has a negative string length at byte {at}")))?;
                    let s = text(take(data, &mut pos, n, at)?, at)?;
                    m.push(Value::Str(s))?;
                }
                b'c' => {
                    let module = String::from_utf8_lossy(take_line(data, &mut pos, at)?).into_owned();
                    let name = String::from_utf8_lossy(take_line(data, &mut pos, at)?).into_owned();
                    m.push(resolve_global(&module, &name, at)?)?;
                }
                0x93 => {
                    let name = m.pop(at)?;
                    let module = m.pop(at)?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        return Err(bad(format!("its pickle's STACK_GLOBAL at byte {at} does not name a module and a global")));
                    };
                    m.push(resolve_global(module, name, at)?)?;
                }
                b'R' => {
                    let args = m.pop(at)?;
                    let callable = m.pop(at)?;
                    let value = m.vm.reduce(&callable, &args, at)?;
                    m.push(value)?;
                }
                b'b' => {
                    let state = m.pop(at)?;
                    let target = m.top(at)?.clone();
                    // OrderedDict's state: its __dict__, e.g. torch's {'_metadata': …}, which is ignored
                    if m.vm.dict(&target).is_none() || m.vm.dict(&state).is_none() {
                        return Err(bad(format!(
                            "its pickle's BUILD at byte {at} sets the state of a {} to a {}; only a dict's attributes are accepted",
                            m.vm.kind(&target),
                            m.vm.kind(&state)
                        )));
                    }
                }
                b'Q' => {
                    let pid = m.pop(at)?;
                    let storage = m.vm.persistent_load(&pid, at)?;
                    m.push(storage)?;
                }
                _ => {
                    return Err(match opcode_name(op) {
                        Some(name) => bad(format!(
                            "its pickle uses opcode {name} (0x{op:02x}) at byte {at}, which this loader does not support (it never runs code from a file)"
                        )),
                        None => bad(format!("its pickle has an unknown opcode 0x{op:02x} at byte {at}")),
                    });
                }
            }
        }
    }

    /// REDUCE: the Rust implementations of the allowed callables.
    pub(super) fn reduce(&mut self, callable: &Value, args: &Value, at: usize) -> Result<Value> {
        let Value::Global(callable) = *callable else {
            return Err(bad(format!("its pickle calls a {} at byte {at}", self.kind(callable))));
        };
        let args = self.tuple(args).ok_or_else(|| bad(format!("its pickle's REDUCE at byte {at} has {} arguments, not a tuple", self.kind(args))))?;
        match callable {
            Callable::OrderedDict => {
                if !args.is_empty() {
                    return Err(bad(format!("its pickle calls collections.OrderedDict with arguments at byte {at}")));
                }
                self.new_obj(Obj::Dict(Vec::new()))
            }
            Callable::RebuildParameter => match args {
                [tensor @ Value::Tensor(_), Value::Bool(_) | Value::Int(_), hooks] if self.dict(hooks).is_some() => Ok(tensor.clone()),
                _ => Err(bad(format!("its pickle calls torch._utils._rebuild_parameter at byte {at} with unexpected arguments"))),
            },
            Callable::RebuildTensorV2 => {
                if !(6..=7).contains(&args.len()) {
                    return Err(bad(format!("its pickle calls torch._utils._rebuild_tensor_v2 at byte {at} with {} arguments", args.len())));
                }
                let args = args.to_vec();
                self.rebuild_tensor(&args, at)
            }
            Callable::Storage(dtype) => {
                Err(bad(format!("its pickle calls the storage type {dtype:?} at byte {at}; storages may only come from persistent ids")))
            }
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    pub(super) fn rebuild_tensor(&mut self, args: &[Value], at: usize) -> Result<Value> {
        let wrong = |what: &str| bad(format!("its pickle calls torch._utils._rebuild_tensor_v2 at byte {at} with {what}"));
        let Value::Storage(storage) = args[0] else {
            return Err(wrong(&format!("a {} instead of a storage", self.kind(&args[0]))));
        };
        let Value::Int(offset) = args[1] else {
            return Err(wrong("a storage offset that is not an int"));
        };
        let offset = usize::try_from(offset).map_err(|_| wrong("a negative storage offset"))?;
        let shape = self.sizes(&args[2]).ok_or_else(|| wrong("a size that is not a tuple of non-negative ints"))?;
        let stride = self.sizes(&args[3]).ok_or_else(|| wrong("a stride that is not a tuple of non-negative ints"))?;
        if shape.len() != stride.len() {
            return Err(wrong("size and stride of different lengths"));
        }
        if !matches!(args[4], Value::Bool(_) | Value::Int(_)) || self.dict(&args[5]).is_none() {
            return Err(wrong("unexpected requires_grad or backward_hooks"));
        }
        if let Some(metadata) = args.get(6) {
            if !matches!(metadata, Value::None) && self.dict(metadata).is_none() {
                return Err(wrong("metadata that is not a dict"));
            }
        }
        if self.objects.len() + self.tensors.len() >= MAX_OBJECTS {
            return Err(bad(format!("its pickle builds more than {MAX_OBJECTS} objects")));
        }
        self.tensors.push(TensorDecl { storage, offset, shape, stride });
        Ok(Value::Tensor(self.tensors.len() - 1))
    }

    /// A tuple of at most [`MAX_NDIM`] non-negative ints.
    pub(super) fn sizes(&self, v: &Value) -> Option<Vec<usize>> {
        let items = self.tuple(v)?;
        if items.len() > MAX_NDIM {
            return None;
        }
        items
            .iter()
            .map(|item| match item {
                Value::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect()
    }

    /// BINPERSID: `('storage', storage_type, key, location, numel[, view_metadata = None])`.
    pub(super) fn persistent_load(&mut self, pid: &Value, at: usize) -> Result<Value> {
        let wrong = |what: &str| bad(format!("its pickle has a persistent id at byte {at} that {what}"));
        let items = self.tuple(pid).ok_or_else(|| wrong("is not a tuple"))?;
        let (dtype, key, numel) = match items {
            [Value::Str(tag), Value::Global(Callable::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel), rest @ ..]
                if &**tag == "storage" && rest.len() <= 1 =>
            {
                if rest.first().is_some_and(|view| !matches!(view, Value::None)) {
                    return Err(wrong("is a view of a storage (legacy view_metadata), which is not supported"));
                }
                (*dtype, key.clone(), usize::try_from(*numel).map_err(|_| wrong("has a negative size"))?)
            }
            _ => return Err(wrong("is not ('storage', <storage type>, key, location, size)")),
        };
        if numel.checked_mul(dtype.size()).is_none() {
            return Err(wrong("has an impossible size"));
        }
        if let Some(&i) = self.storage_index.get(&key) {
            let s = &self.storages[i];
            if s.dtype != dtype || s.numel != numel {
                return Err(wrong(&format!("declares storage \"{}\" again with another type or size", shown(&key))));
            }
            return Ok(Value::Storage(i));
        }
        self.storages.push(StorageDecl { key: key.clone(), dtype, numel });
        self.storage_index.insert(key, self.storages.len() - 1);
        Ok(Value::Storage(self.storages.len() - 1))
    }
}

impl Machine<'_> {
    /// The stack depth below which the innermost MARK hides values.
    pub(super) fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(bad(format!("its pickle's stack grows past {MAX_STACK} values")));
        }
        self.stack.push(v);
        Ok(())
    }

    pub(super) fn push_obj(&mut self, obj: Obj) -> Result<()> {
        let v = self.vm.new_obj(obj)?;
        self.push(v)
    }

    pub(super) fn pop(&mut self, at: usize) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(bad(format!("its pickle's opcode at byte {at} pops an empty stack")));
        }
        self.stack.pop().ok_or_else(|| bad(format!("its pickle's opcode at byte {at} pops an empty stack")))
    }

    pub(super) fn top(&self, at: usize) -> Result<&Value> {
        match self.stack.last() {
            Some(v) if self.stack.len() > self.floor() => Ok(v),
            _ => Err(bad(format!("its pickle's opcode at byte {at} reads an empty stack"))),
        }
    }

    /// The values pushed since the last MARK.
    pub(super) fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| bad(format!("its pickle's opcode at byte {at} has no MARK")))?;
        if mark > self.stack.len() {
            return Err(bad(format!("its pickle's opcode at byte {at} has a broken MARK")));
        }
        Ok(self.stack.split_off(mark))
    }

    pub(super) fn list_on_top(&mut self, at: usize) -> Result<&mut Vec<Value>> {
        let target = self.top(at)?.clone();
        let kind = self.vm.kind(&target);
        match (target, &mut self.vm.objects) {
            (Value::Obj(i), objects) => match objects.get_mut(i) {
                Some(Obj::List(items)) => Ok(items),
                _ => Err(bad(format!("its pickle appends to a {kind} at byte {at}"))),
            },
            _ => Err(bad(format!("its pickle appends to a {kind} at byte {at}"))),
        }
    }

    pub(super) fn dict_on_top(&mut self, at: usize) -> Result<&mut Vec<(Value, Value)>> {
        let target = self.top(at)?.clone();
        let kind = self.vm.kind(&target);
        match (target, &mut self.vm.objects) {
            (Value::Obj(i), objects) => match objects.get_mut(i) {
                Some(Obj::Dict(entries)) => Ok(entries),
                _ => Err(bad(format!("its pickle sets an item of a {kind} at byte {at}"))),
            },
            _ => Err(bad(format!("its pickle sets an item of a {kind} at byte {at}"))),
        }
    }

    pub(super) fn put(&mut self, i: u32, at: usize) -> Result<()> {
        let v = self.top(at)?.clone();
        self.memo.insert(i, v, at)
    }

    pub(super) fn get(&mut self, i: u32, at: usize) -> Result<()> {
        let v = self.memo.get(i).cloned().ok_or_else(|| bad(format!("its pickle reads memo entry {i} at byte {at}, which was never stored")))?;
        self.push(v)
    }
}
