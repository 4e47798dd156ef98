//! Range checks on parsed requests. Each failure is a 422 naming the field, with OPEA's wording
//! ("2.5 is greater than the maximum of 2 - 'temperature'").

use crate::error::ServiceError;

/// Semantic checks run after a body parsed; the JSON extractor calls it for every request.
pub trait Validate {
    /// Ok, or the first invalid field.
    fn validate(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}

impl Validate for serde_json::Value {}
impl Validate for serde_json::Map<String, serde_json::Value> {}

/// `value >= min`.
pub fn at_least<T: PartialOrd + std::fmt::Display>(field: &str, value: T, min: T) -> Result<(), ServiceError> {
    if value < min {
        return Err(ServiceError::invalid(field, format!("{value} is less than the minimum of {min} - '{field}'")));
    }
    Ok(())
}

/// `value <= max`.
pub fn at_most<T: PartialOrd + std::fmt::Display>(field: &str, value: T, max: T) -> Result<(), ServiceError> {
    if value > max {
        return Err(ServiceError::invalid(field, format!("{value} is greater than the maximum of {max} - '{field}'")));
    }
    Ok(())
}

/// `min <= value <= max`, also rejecting NaN.
pub fn within(field: &str, value: f64, min: f64, max: f64) -> Result<(), ServiceError> {
    if value.is_nan() {
        return Err(ServiceError::invalid(field, format!("NaN is not a valid number - '{field}'")));
    }
    at_least(field, value, min)?;
    at_most(field, value, max)
}

/// Optional variant of [`within`].
pub fn within_opt(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<(), ServiceError> {
    value.map_or(Ok(()), |v| within(field, v, min, max))
}

/// A strictly positive integer (pydantic `PositiveInt`).
pub fn positive(field: &str, value: u32) -> Result<(), ServiceError> {
    at_least(field, value, 1)
}

/// Optional variant of [`positive`].
pub fn positive_opt(field: &str, value: Option<u32>) -> Result<(), ServiceError> {
    value.map_or(Ok(()), |v| positive(field, v))
}

/// One of a fixed set of strings.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), ServiceError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    let value = crate::limits::excerpt(value);
    Err(ServiceError::invalid(field, format!("'{value}' is not one of {allowed:?} - '{field}'")))
}

/// OPEA's search types (LangChain's names).
pub const SEARCH_TYPES: &[&str] = &["similarity", "similarity_distance_threshold", "similarity_score_threshold", "mmr"];
