//! The prompt the LLM receives: the retrieved documents and the question in a RAG template
//! (English, or Chinese when the context is mostly CJK), or the request's own `chat_template`
//! with `{context}` / `{question}` placeholders (Python `str.format` syntax, as OPEA's
//! LangChain `PromptTemplate` reads it).
//!
//! Two template sets: OPEA's ChatQnA prompt, byte for byte (the default, so that a model
//! behind us sees what it sees behind OPEA's `chatqna.py`, with no documents too), and ours,
//! a shorter rewording that sends a bare question when nothing was retrieved.

use std::str::FromStr;

/// Which RAG template set the megaservice uses (`--rag-template`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RagTemplate {
    /// OPEA ChatQnA's `ChatTemplate.generate_rag_prompt`, exactly.
    #[default]
    Opea,
    /// The comps-rs wording; the question alone when no document was retrieved.
    Comps,
}

impl FromStr for RagTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "opea" => Ok(Self::Opea),
            "comps" => Ok(Self::Comps),
            other => Err(format!("unknown RAG template {other:?}: use opea or comps")),
        }
    }
}

// OPEA's wire-level prompt (GenAIExamples ChatQnA `chatqna.py`), as Python renders its
// triple-quoted strings: a leading newline, the `\`-continued lines joined, `\n` plus the
// line break giving the blank lines. Kept verbatim: it is what OPEA sends the LLM.
const OPEA_EN: &str = "\n### You are a helpful, respectful and honest assistant to help the user with questions. \
Please refer to the search results obtained from the local knowledge base. \
But be careful to not incorporate the information that you think is not relevant to the question. \
If you don't know the answer to a question, please don't share false information. \n\n\
### Search results: {context} \n\n\
### Question: {question} \n\n\
### Answer:\n";

const OPEA_ZH: &str = "\n### 你将扮演一个乐于助人、尊重他人并诚实的助手，你的目标是帮助用户解答问题。有效地利用来自本地知识库的搜索结果。确保你的回答中只包含相关信息。如果你不确定问题的答案，请避免分享不准确的信息。\n\
### 搜索结果：{context}\n\
### 问题：{question}\n\
### 回答：\n";

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
/// exactly `{question}` or `{context}` and `{question}`; `set` the deployment's templates.
pub fn build(question: &str, docs: &[String], language: &str, template: Option<&str>, set: RagTemplate) -> String {
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
    if docs.is_empty() && set == RagTemplate::Comps {
        // Nothing was retrieved: the question goes to the LLM as it is, without an empty
        // "search results" section that invites the model to say it found nothing. (OPEA
        // sends its template with an empty context.)
        return question.to_string();
    }
    let chinese = match language {
        "zh" | "zh-CN" | "zh_CN" | "chinese" => true,
        "en" | "english" => false,
        _ => is_mostly_cjk(&context),
    };
    let t = match (set, chinese) {
        (RagTemplate::Opea, false) => OPEA_EN,
        (RagTemplate::Opea, true) => OPEA_ZH,
        (RagTemplate::Comps, false) => RAG_EN,
        (RagTemplate::Comps, true) => RAG_ZH,
    };
    format(t, &context, question)
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
        let p = build("Who won?", &docs(&["Team A won in 2023.", "Team B lost."]), "auto", None, RagTemplate::Comps);
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
        let p = build("首都是哪里？", &docs(&[ctx]), "auto", None, RagTemplate::Comps);
        assert!(p.contains("### 搜索结果：北京是abcdefg\n### 问题：首都是哪里？\n"), "{p}");
        // The request's language wins over detection.
        assert!(build("q", &docs(&[ctx]), "en", None, RagTemplate::Comps).contains("### Search results:"));
        assert!(build("q", &docs(&["plain English"]), "zh", None, RagTemplate::Comps).contains("### 搜索结果："));
    }

    #[test]
    fn no_documents_gives_the_question_alone() {
        assert_eq!(build("What is 2+2?", &[], "auto", None, RagTemplate::Comps), "What is 2+2?");
    }

    #[test]
    fn request_template_with_context_and_question() {
        let t = "Context:\n{context}\n\nQ: {question} {{literal}}";
        assert_eq!(
            build("why?", &docs(&["a", "b"]), "auto", Some(t), RagTemplate::Comps),
            "Context:\na\nb\n\nQ: why? {literal}"
        );
        assert_eq!(
            build("why?", &docs(&["a"]), "auto", Some("Answer briefly: {question}"), RagTemplate::Comps),
            "Answer briefly: why?"
        );
        // Used even with no documents, as OPEA does.
        assert_eq!(build("why?", &[], "auto", Some("[{context}] {question}"), RagTemplate::Comps), "[] why?");
    }

    #[test]
    fn unusable_templates_fall_back_to_the_default() {
        for t in ["{context} only", "{question} {other}", "unclosed {question", "stray } brace {question}", "{}"] {
            let p = build("q?", &docs(&["doc"]), "auto", Some(t), RagTemplate::Comps);
            assert!(p.starts_with("### You are"), "{t}: {p}");
        }
    }

    /// OPEA's templates as Python renders them (the strings below were printed by
    /// `ChatTemplate.generate_rag_prompt` of GenAIExamples' chatqna.py).
    #[test]
    fn opea_templates_match_python_byte_for_byte() {
        let en = build("Who won?", &docs(&["Team A won.", "Team B lost."]), "auto", None, RagTemplate::Opea);
        assert_eq!(
            en,
            "\n### You are a helpful, respectful and honest assistant to help the user with questions. Please refer to \
             the search results obtained from the local knowledge base. But be careful to not incorporate the \
             information that you think is not relevant to the question. If you don't know the answer to a \
             question, please don't share false information. \n\n### Search results: Team A won.\nTeam B lost. \n\n\
             ### Question: Who won? \n\n### Answer:\n"
        );
        let zh = build("首都是哪里？", &docs(&["北京是中国的首都。"]), "auto", None, RagTemplate::Opea);
        assert_eq!(
            zh,
            "\n### 你将扮演一个乐于助人、尊重他人并诚实的助手，你的目标是帮助用户解答问题。有效地利用来自本地知识库的搜索结果。\
             确保你的回答中只包含相关信息。如果你不确定问题的答案，请避免分享不准确的信息。\n### 搜索结果：北京是中国的首都。\n\
             ### 问题：首都是哪里？\n### 回答：\n"
        );
        // With no documents OPEA still sends its template, with an empty context.
        let none = build("What is 2+2?", &[], "auto", None, RagTemplate::Opea);
        assert!(none.contains("### Search results:  \n\n### Question: What is 2+2? \n\n"), "{none:?}");
    }

    #[test]
    fn template_names_parse() {
        assert_eq!("opea".parse::<RagTemplate>(), Ok(RagTemplate::Opea));
        assert_eq!("COMPS".parse::<RagTemplate>(), Ok(RagTemplate::Comps));
        assert!("llama".parse::<RagTemplate>().is_err());
    }
}
