//! OPEA's dataprep wire shapes (`/v1/dataprep/ingest`, `/get`, `/delete`), as the retriever
//! serves them and ChatQnA forwards them. They describe the routes in the OpenAPI documents.

use serde::{Deserialize, Serialize};

/// The multipart form of `POST /v1/dataprep/ingest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataprepIngestForm {
    /// Files (.txt, .md, .html, .pdf, .json, .jsonl, .csv), each a part named `files`.
    #[schema(value_type = Option<Vec<String>>, format = Binary)]
    pub files: Option<Vec<Vec<u8>>>,
    /// A JSON list of http(s) links, e.g. `["https://example.com/page"]`.
    pub link_list: Option<String>,
    /// Characters per chunk, 50-100000 (default 1500).
    pub chunk_size: Option<u32>,
    /// Characters shared by consecutive chunks, below `chunk_size` (default 100).
    pub chunk_overlap: Option<u32>,
    /// The collection (default: the service's `INDEX_NAME`): 1-128 letters, digits, `-`, `_`
    /// or `.`, starting with a letter or digit.
    pub index_name: Option<String>,
}

/// The (optional) body of `POST /v1/dataprep/get`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataprepGetRequest {
    /// The collection (default: the service's `INDEX_NAME`).
    pub index_name: Option<String>,
}

/// One stored file, as `POST /v1/dataprep/get` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataprepFile {
    /// The file name or link.
    pub name: String,
    /// The same as `name`.
    pub id: String,
    /// `File`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Empty.
    pub parent: String,
}

/// The body of `POST /v1/dataprep/delete`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataprepDeleteRequest {
    /// A stored file name, a link, or `all`.
    pub file_path: String,
    /// The collection (default: the service's `INDEX_NAME`).
    pub index_name: Option<String>,
}
