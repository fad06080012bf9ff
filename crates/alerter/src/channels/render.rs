//! What Slack and Teams are sent: the JSON of each message, with every
//! piece of text escaped for the markup the receiver renders. Subjects and
//! bodies carry text from outside (API names from the endpoints file, error
//! messages from remote servers), which must show literally: no formatting,
//! no link, no mention of its own. Pure functions.

use serde_json::{json, Value};

/// Slack `mrkdwn`: `&`, `<` and `>` as entities (so no link, mention or
/// `<!channel>` can be written, and no quote started), and the formatting
/// characters `*`, `_`, `~` and `` ` `` replaced by look-alikes, since
/// Slack has no escape for them (a backslash shows as a backslash).
///
/// Inside a word that is an http(s) URL the formatting characters are
/// kept, so that the links we put in bodies (the dashboard, filtered on an
/// API name that may hold `_` or `*`) still point where they should.
pub fn slack_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for (word, space) in words(s) {
        let in_url = is_http_url(word);
        for c in word.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '*' if !in_url => out.push('\u{2217}'), // ∗ ASTERISK OPERATOR
                '_' if !in_url => out.push('\u{02CD}'), // ˍ MODIFIER LETTER LOW MACRON
                '~' if !in_url => out.push('\u{223C}'), // ∼ TILDE OPERATOR
                '`' if !in_url => out.push('\u{02CB}'), // ˋ MODIFIER LETTER GRAVE ACCENT
                c => out.push(c),
            }
        }
        out.push_str(space);
    }
    out
}

/// The Markdown subset of Teams (Adaptive Card `TextBlock`s, MessageCard
/// `text`): every character that can start formatting, a link, an image,
/// a list, a heading, a quote, code or an entity is backslash-escaped, and
/// a leading `=` (a setext heading underline) too.
pub fn teams_text(s: &str) -> String {
    const SPECIAL: &str = "\\`*_[](){}#+-.!<>~|&";
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    let mut line_start = true;
    for c in s.chars() {
        if SPECIAL.contains(c) || (c == '=' && line_start) {
            out.push('\\');
        }
        out.push(c);
        if c == '\n' || c == '\r' {
            line_start = true;
        } else if !c.is_whitespace() {
            line_start = false;
        }
    }
    out
}

/// The Slack incoming-webhook message: the subject in bold (our markup),
/// then the body.
pub fn slack_message(subject: &str, body: &str) -> Value {
    json!({ "text": format!("*{}*\n{}", slack_text(subject), slack_text(body)) })
}

/// The message a Teams Workflows webhook ("Post to a channel when a webhook
/// request is received") takes: one Adaptive Card with the subject large
/// and bold, one `TextBlock` per paragraph of the body, and an "Open
/// dashboard" button when there is a link.
pub fn teams_adaptive_card(subject: &str, body: &str, dashboard: Option<&str>) -> Value {
    let mut blocks = vec![json!({
        "type": "TextBlock",
        "text": teams_text(subject),
        "size": "Large",
        "weight": "Bolder",
        "wrap": true,
    })];
    blocks.extend(paragraphs(body).into_iter().map(|lines| {
        // Teams ignores a single newline in a TextBlock outside lists.
        let text: Vec<String> = lines.iter().map(|l| teams_text(l)).collect();
        json!({ "type": "TextBlock", "text": text.join("\n\n"), "wrap": true })
    }));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": blocks,
    });
    if let Some(url) = dashboard {
        card["actions"] =
            json!([{ "type": "Action.OpenUrl", "title": "Open dashboard", "url": url }]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The legacy Office 365 connector card (`TEAMS_FORMAT=messagecard`).
/// `title` and `summary` are shown as plain text; `text` is Markdown, with
/// a hard line break (two spaces) at the end of each line.
pub fn teams_message_card(subject: &str, body: &str) -> Value {
    let text: Vec<String> = normalise_newlines(body).lines().map(teams_text).collect();
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "summary": subject,
        "title": subject,
        "text": text.join("  \n"),
    })
}

/// The dashboard link of a notification's payload (`dashboard_url`, or
/// `dashboard` as the composer writes it today), when it is an http(s) URL.
pub fn dashboard_url(payload: &Value) -> Option<String> {
    ["dashboard_url", "dashboard"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(Value::as_str))
        .filter(|u| is_http_url(u))
        .map(str::to_string)
}

/// An http(s) URL with a host name of letters, digits, dots and dashes (or
/// an IP address).
fn is_http_url(s: &str) -> bool {
    let Ok(u) = url::Url::parse(s) else {
        return false;
    };
    let host_ok = match u.host() {
        Some(url::Host::Domain(d)) => d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
        None => false,
    };
    matches!(u.scheme(), "http" | "https") && host_ok
}

/// `s` cut into (word, the whitespace after it) pairs; leading whitespace
/// comes as an empty word.
fn words(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(word_end);
        let space_end = tail
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(tail.len());
        let (space, tail) = tail.split_at(space_end);
        out.push((word, space));
        rest = tail;
    }
    out
}

fn normalise_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// The body's paragraphs (separated by blank lines), each a list of lines.
fn paragraphs(body: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in normalise_newlines(body).lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line.trim_end().to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "*evil* <https://x|click> <!channel> <@U123> _it_ ~st~ `code` > q & [l](https://e)";

    #[test]
    fn slack_text_leaves_no_link_mention_or_formatting_character() {
        let s = slack_text(HOSTILE);
        for bad in ['<', '>', '*', '_', '~', '`'] {
            assert!(!s.contains(bad), "{bad} in {s}");
        }
        assert_eq!(
            s,
            "\u{2217}evil\u{2217} &lt;https://x|click&gt; &lt;!channel&gt; &lt;@U123&gt; \
             \u{02CD}it\u{02CD} \u{223C}st\u{223C} \u{02CB}code\u{02CB} &gt; q &amp; [l](https://e)"
        );
    }

    #[test]
    fn slack_text_keeps_urls_working_and_whitespace_as_it_was() {
        let link = "http://grafana.test:3000/d/apimon/api-monitoring?var-api=my_api*2&x=1";
        assert_eq!(
            slack_text(&format!("  Dashboard: {link}\n\nnext_line\t*")),
            "  Dashboard: http://grafana.test:3000/d/apimon/api-monitoring?var-api=my_api*2&amp;x=1\
             \n\nnext\u{02CD}line\t\u{2217}"
        );
        // A word that only starts like a URL gets no exemption.
        assert_eq!(slack_text("http://*x*"), "http://\u{2217}x\u{2217}");
        assert_eq!(
            slack_text("(http://x.test/_a_)"),
            "(http://x.test/\u{02CD}a\u{02CD})"
        );
        assert_eq!(slack_text("http://x.test/_a_"), "http://x.test/_a_");
        assert_eq!(slack_text(""), "");
    }

    #[test]
    fn teams_text_escapes_every_markdown_character() {
        assert_eq!(
            teams_text("*evil* [click](https://x) _a_ ~b~ `c` \\ 1. #h !img <u> a|b &amp; {x}"),
            "\\*evil\\* \\[click\\]\\(https://x\\) \\_a\\_ \\~b\\~ \\`c\\` \\\\ 1\\. \\#h \\!img \\<u\\> a\\|b \\&amp; \\{x\\}"
        );
    }

    #[test]
    fn teams_text_escapes_list_heading_and_quote_markers_at_line_start() {
        assert_eq!(
            teams_text("- a\n+ b\n  > c\n# d\n===\n2) e\nx = y"),
            "\\- a\n\\+ b\n  \\> c\n\\# d\n\\===\n2\\) e\nx = y"
        );
    }

    #[test]
    fn the_slack_subject_is_bold_and_its_content_is_not() {
        let m = slack_message("[apimon] DOWN: *x*", "Last error: <@U1>");
        assert_eq!(
            m["text"],
            "*[apimon] DOWN: \u{2217}x\u{2217}*\nLast error: &lt;@U1&gt;"
        );
    }

    #[test]
    fn an_adaptive_card_has_the_subject_then_one_block_per_paragraph_and_the_dashboard() {
        let m = teams_adaptive_card(
            "[apimon] DOWN: a_b",
            "API: a_b\r\nLast error: x\n\n  \nDashboard: http://g.test/d\n",
            Some("http://g.test/d?var-api=a_b"),
        );
        assert_eq!(m["type"], "message");
        let att = &m["attachments"][0];
        assert_eq!(
            att["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert!(att["contentUrl"].is_null());
        let card = &att["content"];
        assert_eq!(
            (&card["type"], &card["version"]),
            (&json!("AdaptiveCard"), &json!("1.4"))
        );
        let body = card["body"].as_array().unwrap();
        assert_eq!(body.len(), 3, "{body:?}");
        assert_eq!(body[0]["text"], "\\[apimon\\] DOWN: a\\_b");
        assert_eq!(
            (&body[0]["weight"], &body[0]["size"]),
            (&json!("Bolder"), &json!("Large"))
        );
        assert_eq!(body[1]["text"], "API: a\\_b\n\nLast error: x");
        assert_eq!(body[2]["text"], "Dashboard: http://g\\.test/d");
        assert!(body
            .iter()
            .all(|b| b["type"] == "TextBlock" && b["wrap"] == true));
        assert_eq!(
            card["actions"],
            json!([{"type": "Action.OpenUrl", "title": "Open dashboard", "url": "http://g.test/d?var-api=a_b"}])
        );
        let without = teams_adaptive_card("s", "b", None);
        assert!(without["attachments"][0]["content"]
            .get("actions")
            .is_none());
    }

    #[test]
    fn a_message_card_escapes_its_markdown_text_only() {
        let m = teams_message_card("DOWN: *x*", "API: *x*\nError: [a](b)\n");
        assert_eq!(m["@type"], "MessageCard");
        assert_eq!(m["title"], "DOWN: *x*");
        assert_eq!(m["text"], "API: \\*x\\*  \nError: \\[a\\]\\(b\\)");
    }

    #[test]
    fn the_dashboard_link_must_be_an_http_url() {
        assert_eq!(
            dashboard_url(&json!({"dashboard_url": "https://g.test/d"})).as_deref(),
            Some("https://g.test/d")
        );
        assert_eq!(
            dashboard_url(&json!({"dashboard": "http://g.test/d"})).as_deref(),
            Some("http://g.test/d")
        );
        for bad in [
            json!({"dashboard_url": "javascript:alert(1)"}),
            json!({"dashboard_url": 3}),
            json!({}),
            json!(null),
        ] {
            assert_eq!(dashboard_url(&bad), None, "{bad}");
        }
    }
}
