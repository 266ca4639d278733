//! tracefs: where it is (mounting it when nothing is), and field offsets from the format files.
use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
};

use super::ProbeError;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs directory, mounted at /sys/kernel/tracing if no tracefs is mounted yet.
pub fn locate() -> Result<PathBuf, ProbeError> {
    if let Some(dir) = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(dir.to_path_buf());
    }
    let target = Path::new(CANDIDATES[0]);
    let c = |s: &str| CString::new(s).map_err(|_| ProbeError::NoTracefs("bad path".into()));
    let (src, dst) = (c("tracefs")?, c(CANDIDATES[0])?);
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // Mounted but not ours to read (root-only 0700), or not mounted and not ours to mount.
        let mounted = std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
        });
        return Err(ProbeError::NoTracefs(if mounted {
            format!(
                "tracefs at {} is readable by root only: run as uid 0 or with CAP_DAC_READ_SEARCH",
                target.display()
            )
        } else {
            format!(
                "tracefs is not mounted and mounting it on {} failed ({err}): mount it (mount -t tracefs tracefs {}) or give CAP_SYS_ADMIN",
                target.display(),
                target.display()
            )
        }));
    }
    Ok(target.to_path_buf())
}

/// Field name -> byte offset of one tracepoint, from `events/<category>/<name>/format`.
#[derive(Debug, Clone)]
pub struct Format {
    pub tracepoint: String,
    fields: HashMap<String, u32>,
    /// End of the last fixed field: the bytes the programs copy.
    end: u32,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Format, ProbeError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| ProbeError::MissingTracepoint {
            tracepoint: format!("{category}:{name}"),
            reason: e.to_string(),
        })?;
        Ok(Format::parse(&format!("{category}:{name}"), &text))
    }

    /// Lines look like `\tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;`.
    pub fn parse(tracepoint: &str, text: &str) -> Format {
        let mut fields = HashMap::new();
        let mut end = 0;
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = 0;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = d
                        .split_whitespace()
                        .last()
                        .map(|n| n.split('[').next().unwrap_or(n));
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse::<u32>().ok();
                } else if let Some(n) = part.strip_prefix("size:") {
                    size = n.parse::<u32>().unwrap_or(0);
                }
            }
            if let (Some(name), Some(offset)) = (decl, offset) {
                fields.insert(name.to_string(), offset);
                end = end.max(offset + size);
            }
        }
        Format {
            tracepoint: tracepoint.to_string(),
            fields,
            end,
        }
    }

    /// Bytes of the fixed record, checked against what the programs can copy.
    pub fn size(&self) -> Result<u32, ProbeError> {
        if self.end as usize > graceful_common::RECORD_BUF {
            return Err(ProbeError::MissingTracepoint {
                tracepoint: self.tracepoint.clone(),
                reason: format!(
                    "its record has {} bytes, more than the {} the programs copy",
                    self.end,
                    graceful_common::RECORD_BUF
                ),
            });
        }
        Ok(self.end)
    }

    pub fn offset(&self, field: &str) -> Result<u32, ProbeError> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| ProbeError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: field.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNAL_GENERATE: &str = "name: signal_generate\nID: 190\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;\n\
\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;\n\
\tfield:__data_loc char[] filename;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:int result;\toffset:44;\tsize:4;\tsigned:1;\n\n\
print fmt: \"sig=%d\", REC->sig\n";

    #[test]
    fn parses_offsets_arrays_and_data_loc() {
        let f = Format::parse("signal:signal_generate", SIGNAL_GENERATE);
        assert_eq!(f.offset("sig").unwrap(), 8);
        assert_eq!(f.offset("comm").unwrap(), 20);
        assert_eq!(f.offset("filename").unwrap(), 28);
        assert_eq!(f.offset("result").unwrap(), 44);
        assert_eq!(f.offset("common_pid").unwrap(), 4);
        assert_eq!(f.size().unwrap(), 48);
        let err = f.offset("nope").unwrap_err().to_string();
        assert!(
            err.contains("signal:signal_generate") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn a_grown_common_header_moves_every_field() {
        let shifted = SIGNAL_GENERATE.replace("offset:8;", "offset:16;");
        assert_eq!(Format::parse("x", &shifted).offset("sig").unwrap(), 16);
    }
}
