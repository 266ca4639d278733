//! Secrets out of commands before anything shows them: preStop hooks and exec probes carry
//! bearer tokens, passwords in URLs and `--password=` flags.
use std::sync::LazyLock;

use regex::Regex;

const HIDDEN: &str = "[REDACTED]";

/// What names a secret inside a key, a flag or a header.
const SECRET_WORDS: &str = "pass|pwd|token|secret|key|auth|credential|session|cookie|signature";

struct Rule {
    pattern: Regex,
    replacement: String,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    // The patterns are constants: one that does not compile fails the unit tests.
    let rule = |pattern: &str, replacement: &str| {
        Some(Rule {
            pattern: Regex::new(pattern).ok()?,
            replacement: replacement.replace("HIDDEN", HIDDEN),
        })
    };
    [
        // `Authorization: Bearer x`, `Cookie: ...`: the whole value, to the end of the argument.
        rule(
            r#"(?i)\b((?:proxy-)?authorization|cookie|x-api-key|x-auth-token|api-key)(\s*:\s*)[^'"\n]*"#,
            "${1}${2}HIDDEN",
        ),
        // `Bearer x`, `Basic x` outside a header.
        rule(
            r#"(?i)\b(bearer|basic)(\s+|[-_:=])[A-Za-z0-9._~+/=-]+"#,
            "${1}${2}HIDDEN",
        ),
        // Userinfo in a URL: `https://user:pass@host`.
        rule(
            r#"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'"]*):[^@\s/'"]*@"#,
            "${1}:HIDDEN@",
        ),
        // `curl -u user:pass`.
        rule(r#"(-u|--user)(\s+|=)([^\s:'"]+):[^\s'"]+"#, "${1}${2}${3}:HIDDEN"),
        // `password=x`, `--token=x`, `api_key: x`, `?access_token=x`.
        rule(
            &format!(r#"(?i)([A-Za-z0-9_.-]*(?:{SECRET_WORDS})[A-Za-z0-9_.-]*)(=|:\s*)[^\s&'";]+"#),
            "${1}${2}HIDDEN",
        ),
        // `--password x` (the value as the next word).
        rule(
            &format!(r#"(?i)(--?[A-Za-z0-9_-]*(?:{SECRET_WORDS})[A-Za-z0-9_-]*)(\s+)[^\s'"-][^\s'"]*"#),
            "${1}${2}HIDDEN",
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// A flag whose value, the next argument, is a secret.
static SECRET_FLAG: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)^--?[A-Za-z0-9_-]*(?:{SECRET_WORDS})[A-Za-z0-9_-]*$"
    ))
    .ok()
});

/// `text` with every secret it recognisably carries replaced by `[REDACTED]`.
pub fn text(text: &str) -> String {
    RULES.iter().fold(text.to_string(), |t, r| {
        r.pattern
            .replace_all(&t, r.replacement.as_str())
            .into_owned()
    })
}

/// A command line (argv) for display: each argument redacted, and the argument after a flag
/// that names a secret (`--password`, `-H` with a header is handled inside the argument).
pub fn command(argv: &[String]) -> String {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide_next = false;
    for arg in argv {
        if hide_next {
            out.push(HIDDEN.to_string());
            hide_next = false;
            continue;
        }
        hide_next = SECRET_FLAG.as_ref().is_some_and(|s| s.is_match(arg));
        out.push(text(arg));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn every_rule_compiles() {
        assert_eq!(RULES.len(), 6);
        assert!(SECRET_FLAG.is_some());
    }

    #[test]
    fn secrets_are_hidden() {
        let cases = [
            (
                "curl -H 'Authorization: Bearer s3cr3t' http://localhost/drain",
                "s3cr3t",
            ),
            ("wget --header=Authorization:s3cr3t http://x", "s3cr3t"),
            ("echo token=Bearer-s3cr3t > /dev/null", "s3cr3t"),
            ("curl https://admin:s3cr3t@db.internal:8443/x", "s3cr3t"),
            ("mysqladmin --password=s3cr3t shutdown", "s3cr3t"),
            ("app --api-key s3cr3t stop", "s3cr3t"),
            ("curl -u admin:s3cr3t http://x", "s3cr3t"),
            ("curl http://x/drain?access_token=s3cr3t&a=1", "s3cr3t"),
            ("PGPASSWORD=s3cr3t psql -c 'select 1'", "s3cr3t"),
            ("Bearer s3cr3t", "s3cr3t"),
        ];
        for (cmd, secret) in cases {
            let shown = text(cmd);
            assert!(!shown.contains(secret), "{cmd} -> {shown}");
            assert!(shown.contains(HIDDEN), "{cmd} -> {shown}");
        }
    }

    #[test]
    fn plain_commands_are_unchanged() {
        for cmd in [
            "sleep 5",
            "/bin/sh -c 'nginx -s quit; sleep 3'",
            "curl -sf http://localhost:8080/shutdown",
        ] {
            assert_eq!(text(cmd), cmd);
        }
    }

    #[test]
    fn argv_flags_hide_their_value() {
        let shown = command(&argv(&[
            "app",
            "--password",
            "s3cr3t",
            "-H",
            "Authorization: Bearer t0k3n",
            "stop",
        ]));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0k3n"),
            "{shown}"
        );
        assert!(
            shown.starts_with("app --password [REDACTED] -H Authorization: [REDACTED]"),
            "{shown}"
        );
        assert!(shown.ends_with(" stop"), "{shown}");
    }
}
