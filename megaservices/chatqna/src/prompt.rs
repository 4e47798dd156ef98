//! The prompt the LLM receives: the retrieved documents and the question in a RAG template
//! (English, or Chinese when the context is mostly CJK), or the request's own `chat_template`
//! with `{context}` / `{question}` placeholders (Python `str.format` syntax, as OPEA's
//! LangChain `PromptTemplate` reads it).

const RAG_EN: &str = "### You are a helpful, honest assistant answering the user's question. \
Use the search results from the local knowledge base below; ignore any result that does not \
bear on the question. If the results do not contain the answer and you do not know it, say so \
instead of guessing.\n\
### Search results: {context}\n\
### Question: {question}\n\
### Answer:\n";

const RAG_ZH: &str = "### 你是一个乐于助人且诚实的助手，负责回答用户的问题。请参考下面来自本地知识库的搜索结果，\
忽略与问题无关的内容。如果搜索结果中没有答案而你也不知道，请直接说明，不要猜测。\n\
### 搜索结果：{context}\n\
### 问题：{question}\n\
### 回答：\n";

/// Share of CJK characters in the context from which the Chinese template is used (OPEA's).
const CJK_SHARE: f64 = 0.3;

/// The prompt for `question` given the retrieved `docs`. `language` is the request's (`auto`,
/// `en`, `zh`); `template` the request's `chat_template`, used when its placeholders are
/// exactly `{question}` or `{context}` and `{question}`.
pub fn build(question: &str, docs: &[String], language: &str, template: Option<&str>) -> String {
    let context = docs.join("\n");
    if let Some(t) = template.filter(|t| !t.trim().is_empty()) {
        match placeholders(t) {
            Some(vars) if vars == ["context", "question"] || vars == ["question"] => {
                return format(t, &context, question);
            }
            _ => tracing::warn!(
                template = t,
                "chat_template ignored: it must use {{question}}, or {{context}} and {{question}}, and nothing else"
            ),
        }
    }
    if docs.is_empty() {
        // Nothing was retrieved: the question goes to the LLM as it is, without an empty
        // "search results" section that invites the model to say it found nothing.
        return question.to_string();
    }
    let chinese = match language {
        "zh" | "zh-CN" | "zh_CN" | "chinese" => true,
        "en" | "english" => false,
        _ => is_mostly_cjk(&context),
    };
    format(if chinese { RAG_ZH } else { RAG_EN }, &context, question)
}

/// Whether at least 30% of the characters of `text` are CJK ideographs (U+4E00..U+9FFF).
pub fn is_mostly_cjk(text: &str) -> bool {
    let total = text.chars().count();
    if total == 0 {
        return false;
    }
    let cjk = text.chars().filter(|c| ('\u{4E00}'..='\u{9FFF}').contains(c)).count();
    cjk as f64 / total as f64 >= CJK_SHARE
}

/// The sorted, distinct placeholder names of a `str.format` template, or `None` when it is
/// malformed (an unmatched brace, or a placeholder that is not a plain name).
fn placeholders(template: &str) -> Option<Vec<String>> {
    let mut vars = Vec::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) if ch.is_alphanumeric() || ch == '_' => name.push(ch),
                        _ => return None,
                    }
                }
                if name.is_empty() {
                    return None;
                }
                vars.push(name);
            }
            '}' => return None,
            _ => {}
        }
    }
    vars.sort();
    vars.dedup();
    Some(vars)
}

/// Fill a template whose placeholders [`placeholders`] accepted.
fn format(template: &str, context: &str, question: &str) -> String {
    let mut out = String::with_capacity(template.len() + context.len() + question.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&ch| ch != '}').collect();
                match name.as_str() {
                    "context" => out.push_str(context),
                    "question" => out.push_str(question),
                    other => {
                        out.push('{');
                        out.push_str(other);
                        out.push('}');
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(d: &[&str]) -> Vec<String> {
        d.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn english_template_holds_context_and_question() {
        let p = build("Who won?", &docs(&["Team A won in 2023.", "Team B lost."]), "auto", None);
        assert!(p.contains("### Search results: Team A won in 2023.\nTeam B lost.\n"), "{p}");
        assert!(p.contains("### Question: Who won?\n"), "{p}");
        assert!(p.ends_with("### Answer:\n"), "{p}");
    }

    #[test]
    fn chinese_template_from_thirty_percent_cjk() {
        // 3 CJK characters out of 10 is exactly 30%.
        let ctx = "北京是abcdefg";
        assert_eq!(ctx.chars().count(), 10);
        assert!(is_mostly_cjk(ctx));
        assert!(!is_mostly_cjk("北京abcdefgh"));
        let p = build("首都是哪里？", &docs(&[ctx]), "auto", None);
        assert!(p.contains("### 搜索结果：北京是abcdefg\n### 问题：首都是哪里？\n"), "{p}");
        // The request's language wins over detection.
        assert!(build("q", &docs(&[ctx]), "en", None).contains("### Search results:"));
        assert!(build("q", &docs(&["plain English"]), "zh", None).contains("### 搜索结果："));
    }

    #[test]
    fn no_documents_gives_the_question_alone() {
        assert_eq!(build("What is 2+2?", &[], "auto", None), "What is 2+2?");
    }

    #[test]
    fn request_template_with_context_and_question() {
        let t = "Context:\n{context}\n\nQ: {question} {{literal}}";
        assert_eq!(build("why?", &docs(&["a", "b"]), "auto", Some(t)), "Context:\na\nb\n\nQ: why? {literal}");
        assert_eq!(build("why?", &docs(&["a"]), "auto", Some("Answer briefly: {question}")), "Answer briefly: why?");
        // Used even with no documents, as OPEA does.
        assert_eq!(build("why?", &[], "auto", Some("[{context}] {question}")), "[] why?");
    }

    #[test]
    fn unusable_templates_fall_back_to_the_default() {
        for t in ["{context} only", "{question} {other}", "unclosed {question", "stray } brace {question}", "{}"] {
            let p = build("q?", &docs(&["doc"]), "auto", Some(t));
            assert!(p.starts_with("### You are"), "{t}: {p}");
        }
    }
}
