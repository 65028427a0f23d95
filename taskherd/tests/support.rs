//! Helpers shared by the integration tests (`mod support;` in each test file).
#![allow(dead_code)]

/// Unwraps an admitted spawn without requiring `Debug` on the error.
#[track_caller]
pub fn admitted<T, E>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(_) => panic!("expected the task to be admitted, but it was refused"),
    }
}

/// Unwraps a refused spawn without requiring `Debug` on the handle.
#[track_caller]
pub fn refused<T, E>(result: Result<T, E>) -> E {
    match result {
        Ok(_) => panic!("expected the task to be refused, but it was admitted"),
        Err(error) => error,
    }
}
