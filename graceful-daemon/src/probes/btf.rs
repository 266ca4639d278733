//! Just enough of a BTF reader to find a struct member's byte offset in the running kernel
//! (`task_struct.exit_code`), so the kernel programs need no compiled-in layout.
use super::ProbeError;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn name(strings: &[u8], off: u32) -> &[u8] {
    let rest = strings.get(off as usize..).unwrap_or_default();
    &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
}

/// Byte offset of `member` in `struct type_name`, searched in raw BTF (little endian).
pub fn member_offset(btf: &[u8], type_name: &str, member: &str) -> Result<u32, ProbeError> {
    lookup(btf, type_name, Some(member))
}

/// Size in bytes of `struct type_name` (an array's element stride).
pub fn struct_size(btf: &[u8], type_name: &str) -> Result<u32, ProbeError> {
    lookup(btf, type_name, None)
}

/// A member's offset, or with no member the struct's size.
fn lookup(btf: &[u8], type_name: &str, member: Option<&str>) -> Result<u32, ProbeError> {
    let what = member.unwrap_or("size");
    let bad = |why: &str| ProbeError::Btf(format!("{why} while looking for {type_name}.{what}"));
    let types = Types::parse(btf).map_err(&bad)?;
    let mut tried = false;
    for id in 1..types.starts.len() {
        let t = types.get(id).ok_or_else(|| bad("truncated type"))?;
        if t.kind != KIND_STRUCT || name(types.strings, t.name) != type_name.as_bytes() {
            continue;
        }
        tried = true;
        let Some(member) = member else {
            return Ok(t.size);
        };
        if let Some(bits) = types.member_bits(id, member, 0) {
            return Ok(bits / 8);
        }
        // A struct of that name without the member: keep looking (there may be another).
    }
    Err(bad(if tried {
        "no such member"
    } else {
        "not found in BTF"
    }))
}

const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
/// How deep anonymous structs and unions nest before the search gives up (sk_buff: 3).
const MAX_NESTING: usize = 8;

/// The type section, indexed by type id (id 0 is `void`).
struct Types<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    starts: Vec<usize>,
}

struct Type {
    name: u32,
    kind: u32,
    vlen: usize,
    kflag: bool,
    /// Size, or the type referred to (typedefs, modifiers).
    size: u32,
    /// Where its members start.
    members: usize,
}

impl<'a> Types<'a> {
    fn parse(btf: &'a [u8]) -> Result<Types<'a>, &'static str> {
        if u16_at(btf, 0) != Some(BTF_MAGIC) {
            return Err("not little-endian BTF");
        }
        let hdr_len = u32_at(btf, 4).ok_or("short header")? as usize;
        let field = |i: usize| {
            u32_at(btf, 8 + 4 * i)
                .map(|v| v as usize)
                .ok_or("short header")
        };
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types = btf
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("type section out of bounds")?;
        let strings = btf
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of bounds")?;
        let mut starts = vec![0];
        let mut at = 0;
        while at + 12 <= types.len() {
            starts.push(at);
            let info = u32_at(types, at + 4).ok_or("truncated type")?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            at += 12
                + match kind {
                    1 | 14 | 17 => 4,             // int, var, decl_tag
                    3 => 12,                      // array
                    4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
                    6 | 13 => vlen * 8,           // enum, func_proto
                    _ => 0, // ptr, fwd, typedef, modifiers, func, float, type_tag
                };
        }
        Ok(Types {
            types,
            strings,
            starts,
        })
    }

    fn get(&self, id: usize) -> Option<Type> {
        let at = *self.starts.get(id).filter(|_| id > 0)?;
        let info = u32_at(self.types, at + 4)?;
        Some(Type {
            name: u32_at(self.types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kflag: info >> 31 == 1,
            size: u32_at(self.types, at + 8)?,
            members: at + 12,
        })
    }

    /// Bit offset of `member` in struct or union `id`, looking inside its anonymous members
    /// (`sk_buff.dev` sits in an unnamed union in an unnamed struct).
    fn member_bits(&self, id: usize, member: &str, depth: usize) -> Option<u32> {
        let t = self.get(id)?;
        for m in 0..t.vlen {
            let base = t.members + m * 12;
            let m_name = u32_at(self.types, base)?;
            let m_type = u32_at(self.types, base + 4)? as usize;
            let raw = u32_at(self.types, base + 8)?;
            let bits = if t.kflag { raw & 0x00ff_ffff } else { raw };
            let named = name(self.strings, m_name);
            if named == member.as_bytes() {
                return Some(bits);
            }
            if named.is_empty() && depth < MAX_NESTING {
                let inner = self.resolve(m_type)?;
                if let Some(found) = self.member_bits(inner, member, depth + 1) {
                    return Some(bits + found);
                }
            }
        }
        None
    }

    /// The struct or union a member's type names, through typedefs and modifiers.
    fn resolve(&self, mut id: usize) -> Option<usize> {
        for _ in 0..MAX_NESTING {
            let t = self.get(id)?;
            match t.kind {
                KIND_STRUCT | KIND_UNION => return Some(id),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size as usize
                }
                _ => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made BTF: `int` and `struct task_struct { int pid; int exit_code; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0task_struct\0pid\0exit_code\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // [1] int: name "int", kind 1, size 4, then the int data word.
        push(1);
        push(1 << 24);
        push(4);
        push(32);
        // [2] struct task_struct, 2 members.
        push(5);
        push((4 << 24) | 2);
        push(8);
        push(17); // "pid"
        push(1);
        push(0);
        push(21); // "exit_code"
        push(1);
        push(32);
        let mut btf = Vec::new();
        btf.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        btf.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            btf.extend_from_slice(&v.to_le_bytes());
        }
        btf.extend_from_slice(&types);
        btf.extend_from_slice(&strings);
        btf
    }

    #[test]
    fn finds_member_offsets() {
        let btf = sample();
        assert_eq!(member_offset(&btf, "task_struct", "exit_code").unwrap(), 4);
        assert_eq!(member_offset(&btf, "task_struct", "pid").unwrap(), 0);
        assert!(member_offset(&btf, "task_struct", "tgid").is_err());
        assert!(member_offset(&btf[..20], "task_struct", "pid").is_err());
        assert!(member_offset(b"garbage garbage garbage", "task_struct", "pid").is_err());
        assert_eq!(struct_size(&btf, "task_struct").unwrap(), 8);
        assert!(struct_size(&btf, "mm_struct").is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            panic!("/sys/kernel/btf/vmlinux is required on the machines this project runs on");
        };
        let off = member_offset(&btf, "task_struct", "exit_code").unwrap();
        assert!(off > 0 && off < 16384, "{off}");
        // One handler pointer and flags at least, as the kernel programs step through them.
        let ka = struct_size(&btf, "k_sigaction").unwrap();
        assert!((16..=64).contains(&ka), "{ka}");
        // Inside anonymous unions and structs: `sk_buff.dev` follows `next` and `prev`, and
        // `transport_header` lies past `head`'s neighbours in a struct_group on newer kernels.
        assert_eq!(member_offset(&btf, "sk_buff", "dev").unwrap(), 16);
        let th = member_offset(&btf, "sk_buff", "transport_header").unwrap();
        assert!(th > 16 && th < 256, "{th}");
    }
}
