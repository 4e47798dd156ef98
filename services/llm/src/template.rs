//! Chat templates: the model's Jinja template rendered as Hugging Face renders it
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`), and OPEA's
//! `{context}` / `{question}` prompt templates.

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

/// A message as templates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // transformers compiles chat templates with these two options.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env
}

impl ChatTemplate {
    /// Compile `source` (a Jinja chat template).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, Error> {
        let mut env = environment();
        env.add_template_owned("chat", source.to_string())?;
        Ok(Self { env, bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// Render a conversation, ending with the assistant's turn opened when
    /// `add_generation_prompt`. `extra` are the request's `chat_template_kwargs`.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, Error> {
        let tmpl = self.env.get_template("chat")?;
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        let ctx = match extra {
            Some(extra) => context! { ..Value::from_serialize(extra), ..base },
            None => base,
        };
        tmpl.render(ctx)
    }
}

/// A plain ChatML template for models that ship none.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Whether a request's `chat_template` is OPEA's `{context}` / `{question}` prompt template
/// (as opposed to a Jinja chat template, which vLLM also accepts in this field).
pub fn is_prompt_template(t: &str) -> bool {
    (t.contains("{context}") || t.contains("{question}")) && !t.contains("{%") && !t.contains("{{")
}

/// Fill OPEA's prompt template: `{context}` with the documents, `{question}` with the question.
pub fn fill_prompt_template(template: &str, context: &str, question: &str) -> String {
    template.replace("{context}", context).replace("{question}", question)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage { role: role.into(), content: content.into() }
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}[{{ m['content'].strip() | upper }}]{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[msg("user", "  hi ")], false, None).unwrap(), "[HI]");
        let err = t.render(&[msg("tool", "x")], false, None).unwrap_err();
        assert!(err.to_string().contains("bad role tool"), "{err}");
    }

    #[test]
    fn trim_blocks_as_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n  {{ m.content }}\n{% endfor %}", "", "").unwrap();
        assert_eq!(t.render(&[msg("user", "a"), msg("user", "b")], false, None).unwrap(), "  a\n  b\n");
    }

    #[test]
    fn kwargs_reach_the_template() {
        let t = ChatTemplate::new("{{ 'on' if enable_thinking else 'off' }}", "", "").unwrap();
        let extra: serde_json::Map<_, _> = serde_json::from_str(r#"{"enable_thinking": true}"#).unwrap();
        assert_eq!(t.render(&[], true, Some(&extra)).unwrap(), "on");
    }

    #[test]
    fn prompt_templates_are_told_apart() {
        assert!(is_prompt_template("Context: {context}\nQ: {question}"));
        assert!(!is_prompt_template("{% for m in messages %}{{ m.content }}{% endfor %}"));
        assert_eq!(fill_prompt_template("C={context} Q={question}", "doc", "why?"), "C=doc Q=why?");
    }
}
