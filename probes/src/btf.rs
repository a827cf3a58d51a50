//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): enough to find a
//! struct by name and the bit offset of a member path such as `cfs_rq.tg`.
//!
//! Rust eBPF programs carry no CO-RE relocations, so the loader resolves the offsets
//! the program needs from the running kernel's BTF and hands them over as globals.
//! aya-obj parses BTF but keeps its lookup API private; `btf-rs` is LGPL. This reader
//! handles the header, the type section (every kind up to `BTF_KIND_ENUM64`) and the
//! string section; struct/union members with `kind_flag` bitfields; typedef, const,
//! volatile, restrict and type tags are followed when resolving. Malformed input is an
//! error, never a panic (fuzzed in the tests).
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use std::path::{Path, PathBuf};

/// Where the running kernel exposes its BTF (kernel 5.4+, `CONFIG_DEBUG_INFO_BTF`).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
/// More nesting than this while following typedefs or anonymous members means a
/// cycle in malformed input.
const MAX_DEPTH: usize = 32;

/// BTF kinds (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `int`, `bool`, `char`, ... .
    Int,
    /// A pointer.
    Ptr,
    /// An array.
    Array,
    /// A struct.
    Struct,
    /// A union.
    Union,
    /// An enum (32-bit values).
    Enum,
    /// A forward declaration.
    Fwd,
    /// A typedef.
    Typedef,
    /// `volatile`.
    Volatile,
    /// `const`.
    Const,
    /// `restrict`.
    Restrict,
    /// A function.
    Func,
    /// A function prototype.
    FuncProto,
    /// A variable.
    Var,
    /// A data section.
    Datasec,
    /// A floating point type.
    Float,
    /// A declaration tag.
    DeclTag,
    /// A type tag.
    TypeTag,
    /// An enum with 64-bit values.
    Enum64,
}

impl Kind {
    fn from_raw(k: u32) -> Option<Kind> {
        Some(match k {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the common 12-byte header, for `vlen` entries.
    fn extra_len(self, vlen: usize) -> usize {
        match self {
            Kind::Int | Kind::Var | Kind::DeclTag => 4,
            Kind::Array => 12,
            Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 12 * vlen,
            Kind::Enum | Kind::FuncProto => 8 * vlen,
            Kind::Ptr
            | Kind::Fwd
            | Kind::Typedef
            | Kind::Volatile
            | Kind::Const
            | Kind::Restrict
            | Kind::Func
            | Kind::Float
            | Kind::TypeTag => 0,
        }
    }
}

/// Errors of the BTF reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error(
        "cannot read kernel BTF at {path}: the kernel needs CONFIG_DEBUG_INFO_BTF=y (kernel 5.4+) \
         and sysfs mounted at /sys"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data is not valid BTF.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// No struct or union of that name.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member.
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember {
        /// The struct searched.
        strukt: String,
        /// The member not found.
        member: String,
    },
    /// No function of that name.
    #[error("kernel BTF has no function {0}")]
    NoFunc(String),
    /// A member path goes through something that is not a struct or union.
    #[error("kernel BTF: {0} is not a struct or union, cannot look up members in it")]
    NotComposite(String),
}

type Result<T> = std::result::Result<T, BtfError>;

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

/// One parsed type: its header fields and where its extra data starts.
#[derive(Clone, Copy, Debug)]
struct TypeEntry {
    name_off: u32,
    kind: Kind,
    vlen: usize,
    kind_flag: bool,
    /// `size` for Int/Struct/Union/Enum/Datasec/Float, `type` for the others.
    size_or_type: u32,
    /// Offset of the kind-specific data in the type section.
    extra: usize,
}

/// A member found by [`Btf::member`]: where it lies in the outer struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset from the start of the outer struct, in bits.
    pub bit_offset: u64,
    /// Width in bits when the member is a bitfield, `None` otherwise.
    pub bitfield_size: Option<u32>,
    /// The member's type id (not resolved through typedefs).
    pub type_id: u32,
    /// Size of the member's resolved type in bytes (0 if unknown, e.g. a bare fwd).
    pub byte_size: u64,
}

impl Member {
    /// Byte offset; for a bitfield, of the byte holding its first bit.
    pub fn byte_offset(&self) -> u64 {
        self.bit_offset / 8
    }
}

/// A struct/union member as stored: (name, type id, bit offset, bitfield size).
type RawMember<'a> = (&'a str, u32, u64, Option<u32>);

/// Parsed BTF: the raw bytes, where its sections lie, and where each type starts.
///
/// Types are decoded on demand from the raw bytes: a distribution kernel's BTF has
/// ~150k types, and a decoded table of them would triple the memory of the 5-6 MB
/// file (this is the peak RSS of a process loading the probe).
#[derive(Debug)]
pub struct Btf {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Offset of each type in the type section; index 0 is `void` (a placeholder),
    /// type ids start at 1.
    offsets: Vec<u32>,
}

fn u16_at(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The type whose header starts at `off` of the type section: `None` when truncated,
/// `Some(Err(kind))` for an unknown kind.
fn decode(types: &[u8], off: usize) -> Option<std::result::Result<TypeEntry, u32>> {
    let name_off = u32_at(types, off)?;
    let info = u32_at(types, off.checked_add(4)?)?;
    let size_or_type = u32_at(types, off.checked_add(8)?)?;
    let raw_kind = (info >> 24) & 0x1f;
    let Some(kind) = Kind::from_raw(raw_kind) else {
        return Some(Err(raw_kind));
    };
    Some(Ok(TypeEntry {
        name_off,
        kind,
        vlen: (info & 0xffff) as usize,
        kind_flag: info >> 31 == 1,
        size_or_type,
        extra: off + 12,
    }))
}

impl Btf {
    /// Reads and parses the running kernel's BTF ([`VMLINUX_BTF`]).
    pub fn from_sys() -> Result<Btf> {
        Btf::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads and parses a raw BTF file (as /sys/kernel/btf/vmlinux, not an ELF).
    pub fn from_file(path: &Path) -> Result<Btf> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Btf::parse_owned(data)
    }

    /// Parses raw little-endian BTF. Malformed input is an error, never a panic.
    pub fn parse(data: &[u8]) -> Result<Btf> {
        Btf::parse_owned(data.to_vec())
    }

    /// [`Btf::parse`], keeping `data` instead of a copy.
    pub fn parse_owned(data: Vec<u8>) -> Result<Btf> {
        let magic = u16_at(&data, 0).ok_or_else(|| malformed("shorter than the header"))?;
        if magic != MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#x} (expected {MAGIC:#x}, little endian)"
            )));
        }
        let field = |off| u32_at(&data, off).ok_or_else(|| malformed("truncated header"));
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(malformed(format!("header length {hdr_len} < {HEADER_MIN}")));
        }
        let section = |off: u32, len: u32, what: &str| -> Result<std::ops::Range<usize>> {
            let start = hdr_len
                .checked_add(off as usize)
                .ok_or_else(|| malformed(format!("{what} section offset overflows")))?;
            let end = start
                .checked_add(len as usize)
                .ok_or_else(|| malformed(format!("{what} section length overflows")))?;
            if end > data.len() {
                return Err(malformed(format!(
                    "{what} section {start}..{end} beyond the data"
                )));
            }
            Ok(start..end)
        };
        let types = section(field(8)?, field(12)?, "type")?;
        let strings = section(field(16)?, field(20)?, "string")?;
        let types_data = &data[types.clone()];

        let mut offsets: Vec<u32> = vec![0];
        let mut off = 0usize;
        while off < types_data.len() {
            let trunc = || malformed(format!("type {} truncated at byte {off}", offsets.len()));
            let at = u32::try_from(off).map_err(|_| malformed("type section over 4 GiB"))?;
            let t = decode(types_data, off)
                .ok_or_else(trunc)?
                .map_err(|raw_kind| {
                    malformed(format!(
                        "type {} has unknown kind {raw_kind}",
                        offsets.len()
                    ))
                })?;
            let next = t
                .extra
                .checked_add(t.kind.extra_len(t.vlen))
                .filter(|&n| n <= types_data.len())
                .ok_or_else(trunc)?;
            offsets.push(at);
            off = next;
        }
        Ok(Btf {
            data,
            types,
            strings,
            offsets,
        })
    }

    /// The type section.
    fn tdata(&self) -> &[u8] {
        self.data.get(self.types.clone()).unwrap_or_default()
    }

    /// The string section.
    fn sdata(&self) -> &[u8] {
        self.data.get(self.strings.clone()).unwrap_or_default()
    }

    /// Number of types, `void` included.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// True when there is no type besides `void`.
    pub fn is_empty(&self) -> bool {
        self.offsets.len() <= 1
    }

    fn str_at(&self, off: u32) -> Result<&str> {
        let tail = self
            .sdata()
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} beyond the string section")))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at {off} is not NUL-terminated")))?;
        std::str::from_utf8(&tail[..end])
            .map_err(|_| malformed(format!("string at {off} is not UTF-8")))
    }

    fn entry(&self, id: u32) -> Result<TypeEntry> {
        if id == 0 {
            return Err(malformed("type id 0 (void) used where a type is needed"));
        }
        let off = self
            .offsets
            .get(id as usize)
            .ok_or_else(|| malformed(format!("type id {id} out of range")))?;
        // Checked by parse: the header is there and its kind is known.
        decode(self.tdata(), *off as usize)
            .and_then(std::result::Result::ok)
            .ok_or_else(|| malformed(format!("type id {id} undecodable")))
    }

    /// Name of a type (empty for anonymous ones).
    pub fn name(&self, id: u32) -> Result<&str> {
        self.str_at(self.entry(id)?.name_off)
    }

    /// Kind of a type.
    pub fn kind(&self, id: u32) -> Result<Kind> {
        Ok(self.entry(id)?.kind)
    }

    /// Follows typedef, const, volatile, restrict and type tags to the underlying type.
    pub fn resolve(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            let t = self.entry(id)?;
            match t.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!(
            "type chain from {id} too deep (a cycle?)"
        )))
    }

    /// Size in bytes of a type, after resolving modifiers (0 for void, fwd, func).
    pub fn size_of(&self, id: u32) -> Result<u64> {
        self.size_of_shallow(id)
    }

    /// Size, multiplying through nested arrays (at most [`MAX_DEPTH`] deep).
    fn size_of_shallow(&self, id: u32) -> Result<u64> {
        let mut id = id;
        let mut mult: u64 = 1;
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let t = self.entry(self.resolve(id)?)?;
            match t.kind {
                Kind::Array => {
                    let elem = u32_at(self.tdata(), t.extra)
                        .ok_or_else(|| malformed("array truncated"))?;
                    let n = u32_at(self.tdata(), t.extra + 8)
                        .ok_or_else(|| malformed("array truncated"))?;
                    mult = mult.saturating_mul(u64::from(n));
                    id = elem;
                }
                Kind::Ptr => return Ok(mult.saturating_mul(8)),
                Kind::Int
                | Kind::Struct
                | Kind::Union
                | Kind::Enum
                | Kind::Enum64
                | Kind::Float => {
                    return Ok(mult.saturating_mul(u64::from(t.size_or_type)));
                }
                _ => return Ok(0),
            }
        }
        Err(malformed("array nesting too deep"))
    }

    /// Type ids with this name and kind.
    fn find(&self, name: &str, kinds: &[Kind]) -> Result<Option<u32>> {
        for id in 1..self.offsets.len() {
            let id = u32::try_from(id).map_err(|_| malformed("too many types"))?;
            let t = self.entry(id)?;
            if kinds.contains(&t.kind) && self.str_at(t.name_off)? == name {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The id of the first type named `name` of kind `kind`, if any.
    pub fn type_id(&self, name: &str, kind: Kind) -> Result<Option<u32>> {
        self.find(name, &[kind])
    }

    /// A small BTF blob in which each `(name, kind)` of `wanted` found here has the
    /// same type id as here, and every other id up to the largest of them is a bare
    /// `void *`; names missing here are left out.
    ///
    /// For loaders that use the kernel's BTF only to look attach targets up by name
    /// (aya's `FEntry`, `FExit` and `BtfTracePoint::load` take the id and nothing
    /// else): aya's parse of the whole kernel BTF takes ~30 MB here, of this stub a
    /// few MB.
    pub fn attach_stub(&self, wanted: &[(&str, Kind)]) -> Result<Vec<u8>> {
        let mut found: Vec<(u32, u32)> = Vec::new(); // (id, name offset in the stub)
        let mut strings = vec![0u8];
        for (name, kind) in wanted {
            if let Some(id) = self.find(name, &[*kind])? {
                let off = u32::try_from(strings.len()).map_err(|_| malformed("names too long"))?;
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
                found.push((id, off));
            }
        }
        let max = found.iter().map(|f| f.0).max().unwrap_or(0);
        let mut types = Vec::with_capacity(max as usize * 12);
        for id in 1..=max {
            let (name_off, info) = match found.iter().find(|f| f.0 == id) {
                // The original kind and vlen (a func's linkage), pointing at void.
                Some(&(_, name_off)) => {
                    let off = self.offsets[id as usize] as usize;
                    let info = u32_at(self.tdata(), off + 4)
                        .ok_or_else(|| malformed(format!("type {id} truncated")))?;
                    (name_off, info & !(1 << 31))
                }
                None => (0, 2 << 24), // BTF_KIND_PTR to void
            };
            types.extend_from_slice(&name_off.to_le_bytes());
            types.extend_from_slice(&info.to_le_bytes());
            types.extend_from_slice(&0u32.to_le_bytes());
        }
        let len = |v: &Vec<u8>| u32::try_from(v.len()).map_err(|_| malformed("stub over 4 GiB"));
        let (tl, sl) = (len(&types)?, len(&strings)?);
        let mut out = Vec::with_capacity(HEADER_MIN + types.len() + strings.len());
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1); // version
        out.push(0); // flags
        for v in [HEADER_MIN as u32, 0, tl, tl, sl] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        Ok(out)
    }

    /// The id of the struct (or union) `name`; a struct wins over a union.
    pub fn struct_id(&self, name: &str) -> Result<u32> {
        if let Some(id) = self.find(name, &[Kind::Struct])? {
            return Ok(id);
        }
        self.find(name, &[Kind::Union])?
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// Size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Result<u64> {
        self.size_of(self.struct_id(name)?)
    }

    /// Members of a struct/union: (name, type id, bit offset, bitfield size).
    fn members(&self, id: u32) -> Result<Vec<RawMember<'_>>> {
        let t = self.entry(id)?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            return Err(BtfError::NotComposite(format!("type {id}")));
        }
        let mut out = Vec::with_capacity(t.vlen);
        for i in 0..t.vlen {
            let at = t.extra + 12 * i;
            let trunc = || malformed(format!("member {i} of type {id} truncated"));
            let name_off = u32_at(self.tdata(), at).ok_or_else(trunc)?;
            let ty = u32_at(self.tdata(), at + 4).ok_or_else(trunc)?;
            let raw = u32_at(self.tdata(), at + 8).ok_or_else(trunc)?;
            let (bit_offset, mut bits) = if t.kind_flag {
                (raw & 0x00ff_ffff, Some(raw >> 24).filter(|&b| b != 0))
            } else {
                (raw, None)
            };
            // Without kind_flag a bitfield is an INT whose nr_bits is below its size.
            if bits.is_none() && ty != 0 {
                let r = self.entry(self.resolve(ty)?)?;
                if r.kind == Kind::Int {
                    let enc = u32_at(self.tdata(), r.extra).ok_or_else(trunc)?;
                    let nr_bits = enc & 0xff;
                    if u64::from(nr_bits) < u64::from(r.size_or_type) * 8 {
                        bits = Some(nr_bits);
                    }
                }
            }
            out.push((self.str_at(name_off)?, ty, u64::from(bit_offset), bits));
        }
        Ok(out)
    }

    /// Finds `name` among the members of `id`, descending into anonymous structs and
    /// unions; returns it with its offset from the start of `id`.
    fn find_member(&self, id: u32, name: &str, depth: usize) -> Result<Option<Member>> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nested too deep (a cycle?)"));
        }
        for (mname, ty, bit_offset, bits) in self.members(id)? {
            if mname == name {
                return Ok(Some(Member {
                    bit_offset,
                    bitfield_size: bits,
                    type_id: ty,
                    byte_size: self.size_of(ty)?,
                }));
            }
            if mname.is_empty() && ty != 0 {
                let inner = self.resolve(ty)?;
                if matches!(self.kind(inner)?, Kind::Struct | Kind::Union)
                    && let Some(mut m) = self.find_member(inner, name, depth + 1)?
                {
                    m.bit_offset = m.bit_offset.saturating_add(bit_offset);
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }

    /// Looks up a member path: `"cfs_rq.tg"`, `"task_group.css.cgroup"` (struct name,
    /// then members, each inside the previous one's struct type). The offset is from
    /// the start of the first struct.
    ///
    /// # Examples
    /// ```no_run
    /// let btf = probes::btf::Btf::from_sys()?;
    /// let tg = btf.member("cfs_rq.tg")?;
    /// println!("cfs_rq.tg at byte {}", tg.byte_offset());
    /// # Ok::<(), probes::btf::BtfError>(())
    /// ```
    pub fn member(&self, path: &str) -> Result<Member> {
        let mut parts = path.split('.');
        let strukt = parts.next().unwrap_or_default();
        let mut id = self.struct_id(strukt)?;
        let mut ctx = strukt.to_owned();
        let mut acc: Option<Member> = None;
        for part in parts {
            if acc.is_some() {
                // Descend into the previous member's type.
                let prev = acc.map(|m| m.type_id).unwrap_or_default();
                id = self.resolve(prev)?;
                if !matches!(self.kind(id)?, Kind::Struct | Kind::Union) {
                    return Err(BtfError::NotComposite(ctx));
                }
            }
            let m = self
                .find_member(id, part, 0)?
                .ok_or_else(|| BtfError::NoMember {
                    strukt: ctx.clone(),
                    member: part.to_owned(),
                })?;
            let base = acc.map(|a| a.bit_offset).unwrap_or(0);
            acc = Some(Member {
                bit_offset: base.saturating_add(m.bit_offset),
                ..m
            });
            ctx.push('.');
            ctx.push_str(part);
        }
        acc.ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: String::new(),
        })
    }

    /// The value of enumerator `name` (e.g. `cpu_cgrp_id` of `enum cgroup_subsys_id`),
    /// searched in every enum of the BTF; `None` when no enum has it.
    pub fn enum_value(&self, name: &str) -> Result<Option<i64>> {
        for id in 1..self.offsets.len() {
            let id = u32::try_from(id).map_err(|_| malformed("too many types"))?;
            let t = self.entry(id)?;
            let width = match t.kind {
                Kind::Enum => 8,
                Kind::Enum64 => 12,
                _ => continue,
            };
            for i in 0..t.vlen {
                let at = t.extra + width * i;
                let trunc = || malformed(format!("enumerator {i} of type {id} truncated"));
                let name_off = u32_at(self.tdata(), at).ok_or_else(trunc)?;
                if self.str_at(name_off)? != name {
                    continue;
                }
                let lo = u32_at(self.tdata(), at + 4).ok_or_else(trunc)?;
                return Ok(Some(if t.kind == Kind::Enum {
                    // Signed unless kind_flag says unsigned; ids and indices are small.
                    if t.kind_flag {
                        i64::from(lo)
                    } else {
                        i64::from(lo as i32)
                    }
                } else {
                    let hi = u32_at(self.tdata(), at + 8).ok_or_else(trunc)?;
                    ((u64::from(hi) << 32) | u64::from(lo)) as i64
                }));
            }
        }
        Ok(None)
    }

    /// The return type id of function `name` (0 for void).
    pub fn func_return_type(&self, name: &str) -> Result<u32> {
        let f = self
            .find(name, &[Kind::Func])?
            .ok_or_else(|| BtfError::NoFunc(name.to_owned()))?;
        let proto = self.entry(f)?.size_or_type;
        let p = self.entry(proto)?;
        if p.kind != Kind::FuncProto {
            return Err(malformed(format!("function {name} has no prototype")));
        }
        Ok(p.size_or_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF builder for tests.
    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn head(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, st: u32) -> u32 {
            let n = self.s(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for v in [n, info, st] {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }
        pub(crate) fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            let id = self.head(name, 1, 0, false, size);
            self.types.extend_from_slice(&bits.to_le_bytes());
            id
        }
        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.head("", 2, 0, false, to)
        }
        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.head(name, 8, 0, false, to)
        }
        pub(crate) fn konst(&mut self, to: u32) -> u32 {
            self.head("", 10, 0, false, to)
        }
        /// Members: (name, type, bit offset, bitfield size) — kind_flag if any bitfield.
        pub(crate) fn strukt(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = members.iter().any(|m| m.3 != 0);
            let names: Vec<u32> = members.iter().map(|m| self.s(m.0)).collect();
            let id = self.head(name, 4, members.len() as u32, kflag, size);
            for (m, n) in members.iter().zip(names) {
                let off = if kflag { (m.3 << 24) | m.2 } else { m.2 };
                for v in [n, m.1, off] {
                    self.types.extend_from_slice(&v.to_le_bytes());
                }
            }
            id
        }
        pub(crate) fn func(&mut self, name: &str, ret: u32) -> u32 {
            let proto = self.head("", 13, 0, false, ret);
            self.head(name, 12, 0, false, proto)
        }
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let tl = self.types.len() as u32;
            let sl = self.strings.len() as u32;
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            for v in [24u32, 0, tl, tl, sl] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let u64t = b.int("u64", 8, 64);
        let boolt = b.int("_Bool", 1, 8);
        let kn = b.strukt(
            "kernfs_node",
            128,
            &[("flags", u64t, 0, 0), ("id", u64t, 768, 0)],
        );
        let knp = b.ptr(kn);
        let cg = b.strukt("cgroup", 512, &[("self", u64t, 0, 0), ("kn", knp, 2048, 0)]);
        let cgp = b.ptr(cg);
        let css = b.strukt("cgroup_subsys_state", 200, &[("cgroup", cgp, 0, 0)]);
        let tg = b.strukt("task_group", 400, &[("css", css, 0, 0)]);
        let tgp = b.ptr(tg);
        let tgp_t = b.typedef("tg_ptr_t", tgp);
        let tgp_c = b.konst(tgp_t);
        let anon = b.strukt(
            "",
            16,
            &[("throttled", boolt, 8, 1), ("other", boolt, 9, 3)],
        );
        b.strukt(
            "task_struct",
            4096,
            &[
                ("pid", u64t, 64, 0),
                ("", anon, 1024, 0),
                ("sched_task_group", tgp_c, 2048, 0),
            ],
        );
        b.strukt("cfs_rq", 1024, &[("tg", tgp, 2752, 0)]);
        b.func("throttle_cfs_rq", boolt);
        b.func("nothing", 0);
        b.build()
    }

    #[test]
    fn hand_built_blob() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member("cfs_rq.tg").unwrap().bit_offset, 2752);
        assert_eq!(btf.member("cgroup.kn").unwrap().byte_offset(), 256);
        assert_eq!(btf.member("kernfs_node.id").unwrap().bit_offset, 768);
        assert_eq!(btf.member("kernfs_node.id").unwrap().byte_size, 8);
        // Through an anonymous struct, with a kind_flag bitfield.
        let t = btf.member("task_struct.throttled").unwrap();
        assert_eq!((t.bit_offset, t.bitfield_size), (1032, Some(1)));
        let o = btf.member("task_struct.other").unwrap();
        assert_eq!((o.bit_offset, o.bitfield_size), (1033, Some(3)));
        // Nested path through a typedef'd const pointer is refused (not a struct) ...
        assert!(matches!(
            btf.member("task_struct.sched_task_group.css"),
            Err(BtfError::NotComposite(_))
        ));
        // ... while struct-in-struct descends.
        assert_eq!(btf.member("task_group.css.cgroup").unwrap().bit_offset, 0);
        assert_eq!(btf.struct_size("task_struct").unwrap(), 4096);
        assert_eq!(
            btf.size_of(btf.member("task_struct.sched_task_group").unwrap().type_id)
                .unwrap(),
            8
        );
        assert!(matches!(
            btf.member("cfs_rq.nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(btf.member("nope.x"), Err(BtfError::NoStruct(_))));
        assert_ne!(btf.func_return_type("throttle_cfs_rq").unwrap(), 0);
        assert_eq!(btf.func_return_type("nothing").unwrap(), 0);
        assert!(matches!(
            btf.func_return_type("x"),
            Err(BtfError::NoFunc(_))
        ));
    }

    #[test]
    fn attach_stub_keeps_the_ids_aya_looks_up() {
        let mut b = Builder::new();
        let int = b.int("int", 4, 32);
        let _p = b.ptr(int);
        let f = b.func("throttle_cfs_rq", int);
        let _s = b.strukt("cfs_rq", 8, &[("tg", int, 0, 0)]);
        let t = b.typedef("btf_trace_sched_switch", int);
        let _after = b.int("long", 8, 64);
        let btf = Btf::parse(&b.build()).unwrap();
        let stub = btf
            .attach_stub(&[
                ("throttle_cfs_rq", Kind::Func),
                ("btf_trace_sched_switch", Kind::Typedef),
                ("no_such_function", Kind::Func),
            ])
            .unwrap();
        // aya finds each target at the kernel's id...
        let aya = aya::Btf::parse(&stub, aya::Endianness::default()).unwrap();
        use aya_obj::btf::BtfKind;
        assert_eq!(
            aya.id_by_type_name_kind("throttle_cfs_rq", BtfKind::Func)
                .unwrap(),
            f
        );
        assert_eq!(
            aya.id_by_type_name_kind("btf_trace_sched_switch", BtfKind::Typedef)
                .unwrap(),
            t
        );
        assert!(
            aya.id_by_type_name_kind("no_such_function", BtfKind::Func)
                .is_err()
        );
        // ...and the stub is valid BTF for our reader too, ending at the last target.
        let back = Btf::parse(&stub).unwrap();
        assert_eq!(back.len() as u32, t + 1);
        assert_eq!(
            back.type_id("throttle_cfs_rq", Kind::Func).unwrap(),
            Some(f)
        );
        assert_eq!(back.kind(2).unwrap(), Kind::Ptr);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb]).is_err());
        let good = sample();
        // Every truncation parses or fails cleanly.
        for n in 0..good.len() {
            let _ = Btf::parse(&good[..n]);
        }
        // Every single-byte corruption, then lookups on whatever parsed.
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x80, 0x1f] {
                let mut bad = good.clone();
                bad[i] = v;
                if let Ok(btf) = Btf::parse(&bad) {
                    for p in [
                        "cfs_rq.tg",
                        "task_struct.throttled",
                        "task_group.css.cgroup",
                    ] {
                        let _ = btf.member(p);
                    }
                    let _ = btf.func_return_type("throttle_cfs_rq");
                    for id in 0..btf.len() as u32 + 2 {
                        let _ = btf.size_of(id);
                        let _ = btf.resolve(id);
                    }
                }
            }
        }
    }

    #[test]
    fn enum_values() {
        let mut b = Builder::new();
        let n1 = b.s("cpuset_cgrp_id");
        let n2 = b.s("cpu_cgrp_id");
        let id = b.head("cgroup_subsys_id", 6, 2, false, 4);
        for (n, v) in [(n1, 0u32), (n2, 1u32)] {
            b.types.extend_from_slice(&n.to_le_bytes());
            b.types.extend_from_slice(&v.to_le_bytes());
        }
        let _ = id;
        let btf = Btf::parse_owned(b.build()).unwrap();
        assert_eq!(btf.enum_value("cpu_cgrp_id").unwrap(), Some(1));
        assert_eq!(btf.enum_value("cpuset_cgrp_id").unwrap(), Some(0));
        assert_eq!(btf.enum_value("memory_cgrp_id").unwrap(), None);
    }

    #[test]
    fn cycles_do_not_hang() {
        let mut b = Builder::new();
        // typedef 1 -> 2, typedef 2 -> 1
        b.typedef("a", 2);
        b.typedef("b", 1);
        let s = b.strukt("s", 8, &[("x", 1, 0, 0)]);
        let _ = s;
        let btf = Btf::parse(&b.build()).unwrap();
        assert!(btf.resolve(1).is_err());
        assert!(btf.member("s.x").is_err());
        assert!(btf.member("s.x.y").is_err());
    }
}
