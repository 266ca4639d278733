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
    if u16_at(btf, 0) != Some(BTF_MAGIC) {
        return Err(bad("not little-endian BTF"));
    }
    let hdr_len = u32_at(btf, 4).ok_or_else(|| bad("short header"))? as usize;
    let field = |i: usize| {
        u32_at(btf, 8 + 4 * i)
            .map(|v| v as usize)
            .ok_or_else(|| bad("short header"))
    };
    let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or_else(|| bad("type section out of bounds"))?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or_else(|| bad("string section out of bounds"))?;

    let mut at = 0;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at).ok_or_else(|| bad("truncated type"))?;
        let info = u32_at(types, at + 4).ok_or_else(|| bad("truncated type"))?;
        let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31);
        let size = u32_at(types, at + 8).ok_or_else(|| bad("truncated type"))?;
        at += 12;
        if kind == KIND_STRUCT && name(strings, name_off) == type_name.as_bytes() {
            let Some(member) = member else {
                return Ok(size);
            };
            for m in 0..vlen {
                let base = at + m * 12;
                let m_name = u32_at(types, base).ok_or_else(|| bad("truncated member"))?;
                let m_off = u32_at(types, base + 8).ok_or_else(|| bad("truncated member"))?;
                if name(strings, m_name) == member.as_bytes() {
                    let bits = if kflag == 1 {
                        m_off & 0x00ff_ffff
                    } else {
                        m_off
                    };
                    return Ok(bits / 8);
                }
            }
            // A struct of that name without the member: keep looking (there may be another).
        }
        at += match kind {
            1 | 14 | 17 => 4,             // int, var, decl_tag
            3 => 12,                      // array
            4 | 5 | 15 | 19 => vlen * 12, // struct, union, datasec, enum64
            6 | 13 => vlen * 8,           // enum, func_proto
            _ => 0,                       // ptr, fwd, typedef, modifiers, func, float, type_tag
        };
    }
    Err(bad("not found in BTF"))
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
    }
}
