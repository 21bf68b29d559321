//! Redis echoes a config line it rejects (`>>> 'user "app" on ">pw" ...'`),
//! so log lines may carry passwords. Every line of Redis output the agent
//! passes on (last_exit, events, TailLog, its own log) goes through here.

const MASK: &str = "[redacted]";

/// `line` with every known secret masked, and every token that sets or
/// names a password in ACL syntax (`>pw`, `<pw`, `#hash`, quoted or not)
/// masked whether or not the password is known.
pub fn line(line: &str, secrets: &[String]) -> String {
    let mut text = line.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), MASK);
        }
    }
    text.split(' ')
        .map(|token| {
            let bare = token.trim_start_matches(['"', '\'']);
            let quotes = &token[..token.len() - bare.len()];
            match bare.chars().next() {
                // ">>>" (Redis's marker for the rejected line) is no password.
                Some(c @ ('>' | '<' | '#'))
                    if !bare[1..].trim_end_matches(['"', '\'']).is_empty()
                        && !bare[1..].starts_with(MASK)
                        && !bare.chars().all(|x| matches!(x, '>' | '<' | '#')) =>
                {
                    let closing = if quotes.is_empty() { "" } else { &quotes[..1] };
                    let tail = if bare.ends_with(['"', '\'']) {
                        closing
                    } else {
                        ""
                    };
                    format!("{quotes}{c}{MASK}{tail}")
                }
                _ => token.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn lines(lines: Vec<String>, secrets: &[String]) -> Vec<String> {
    lines.into_iter().map(|l| line(&l, secrets)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_secrets_and_password_tokens() {
        let secrets = vec![
            "s3cret-s3cret-s3cret".to_owned(),
            "app-pass-0123456789".to_owned(),
        ];
        for (input, want) in [
            (
                ">>> 'user \"app\" on \">app-pass-0123456789\" \"+nope\"'",
                ">>> 'user \"app\" on \">",
            ),
            ("requirepass s3cret-s3cret-s3cret", "requirepass [redacted]"),
            ("user x on >unknown-password ~*", "user x on >[redacted] ~*"),
            ("ACL setuser x #deadbeef", "ACL setuser x #[redacted]"),
            ("ACL setuser x <oldpass", "ACL setuser x <[redacted]"),
            (
                "1:M 30 Nov 2026 00:00:00.000 # Server initialized",
                "1:M 30 Nov 2026 00:00:00.000 # Server initialized",
            ),
        ] {
            let got = line(input, &secrets);
            assert!(got.starts_with(want), "{input:?} -> {got:?}");
            for s in &secrets {
                assert!(!got.contains(s.as_str()), "{got}");
            }
            assert!(
                !got.contains("unknown-password")
                    && !got.contains("deadbeef")
                    && !got.contains("oldpass"),
                "{got}"
            );
        }
        assert_eq!(
            line(
                ">>> 'user \"app\" on \">app-pass-0123456789\" \"+nope\"'",
                &secrets
            ),
            ">>> 'user \"app\" on \">[redacted]\" \"+nope\"'"
        );
    }
}
