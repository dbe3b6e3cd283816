//! `kato_gpu._native.merge_ranked`: results of several matchers (the shards of
//! `kato_gpu.distributed.ShardedMatcher`) merged into one result order by the rule of
//! `crate::ordering`, so that the order is defined once, in the core, for both cases.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::error::guard;
use super::lifecycle::unlocked;
use super::matcher::Limit;

fn similarities_of(value: &Bound<'_, PyAny>, part: usize) -> PyResult<Vec<f64>> {
    if let Ok(array) = value.extract::<PyReadonlyArray1<'_, f64>>() {
        return Ok(array.as_slice().map(<[f64]>::to_vec).unwrap_or_else(|_| array.as_array().to_vec()));
    }
    value.extract::<Vec<f64>>().map_err(|_| {
        PyTypeError::new_err(format!("similarities[{part}] must be a float64 array or a sequence of floats"))
    })
}

/// `(part, position)` arrays of [`merge_ranked`].
type Merged<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<u32>>);

/// The first `max_predictions` (every one when None) entries of the union of `parts`, each already in
/// result order (similarity descending, then name ascending), in result order: two uint32 arrays
/// `(part, position)`, entry k being `names[part[k]][position[k]]`. A part may be truncated to
/// `max_predictions` itself. ValueError when a part is not in result order or its arrays differ in length.
#[pyfunction]
#[pyo3(signature = (similarities, names, max_predictions = None))]
fn merge_ranked<'py>(
    py: Python<'py>,
    similarities: Bound<'py, PyAny>,
    names: Bound<'py, PyAny>,
    max_predictions: Option<Limit>,
) -> PyResult<Merged<'py>> {
    let names: Vec<Vec<String>> =
        names.extract().map_err(|_| PyTypeError::new_err("names must be a sequence of lists of str (one per part)"))?;
    let similarities = similarity_parts(&similarities, names.len())?;
    let limit = max_predictions.and_then(|l| l.0);
    let merged = unlocked(py, || {
        guard(|| {
            let parts: Vec<(&[f64], &[String])> =
                similarities.iter().zip(&names).map(|(s, n)| (s.as_slice(), n.as_slice())).collect();
            crate::merge_ranked(&parts, limit)
        })
    })?
    .map_err(not_ranked)?;
    let (parts, positions): (Vec<u32>, Vec<u32>) = merged.into_iter().unzip();
    Ok((PyArray1::from_vec(py, parts), PyArray1::from_vec(py, positions)))
}

/// The parts' similarity arrays, one per part of `names_len` name parts.
fn similarity_parts(similarities: &Bound<'_, PyAny>, names_len: usize) -> PyResult<Vec<Vec<f64>>> {
    let parts: Vec<Bound<'_, PyAny>> = similarities
        .try_iter()
        .map_err(|_| PyTypeError::new_err("similarities must be a sequence of arrays (one per part)"))?
        .collect::<PyResult<_>>()?;
    let parts: Vec<Vec<f64>> = parts.iter().enumerate().map(|(p, s)| similarities_of(s, p)).collect::<PyResult<_>>()?;
    if names_len != parts.len() {
        return Err(PyValueError::new_err(format!("{} parts of similarities but {names_len} of names", parts.len())));
    }
    Ok(parts)
}

/// One part's names as `MatchResult._names_packed` gives them: UTF-8 bytes and end offsets,
/// checked (valid UTF-8, ends rising within the bytes, on character boundaries).
fn packed_names<'a>(bytes: &'a [u8], ends: &[u64], part: usize) -> PyResult<Vec<&'a str>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| PyValueError::new_err(format!("names[{part}]: the packed names are not UTF-8")))?;
    let mut names = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for &end in ends {
        let end = usize::try_from(end).unwrap_or(usize::MAX);
        if end < start || end > text.len() || !text.is_char_boundary(end) {
            return Err(PyValueError::new_err(format!("names[{part}]: bad end offset {end} in the packed names")));
        }
        names.push(&text[start..end]);
        start = end;
    }
    Ok(names)
}

/// `(similarities, names)` of a merged result.
type MergedResult<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyList>);

/// `merge_ranked` for parts whose names come packed (`MatchResult._names_packed`: one bytes
/// object and uint64 end offsets per part), returning the merged result itself: its float64
/// similarities and its names as a list, the only Python strings made.
#[pyfunction]
#[pyo3(signature = (similarities, names, max_predictions = None))]
fn merge_packed<'py>(
    py: Python<'py>,
    similarities: Bound<'py, PyAny>,
    names: Vec<(Bound<'py, PyBytes>, PyReadonlyArray1<'py, u64>)>,
    max_predictions: Option<Limit>,
) -> PyResult<MergedResult<'py>> {
    let similarities = similarity_parts(&similarities, names.len())?;
    let ends: Vec<Vec<u64>> = names.iter().map(|(_, e)| e.as_array().to_vec()).collect();
    let texts: Vec<Vec<&str>> = names
        .iter()
        .zip(&ends)
        .enumerate()
        .map(|(p, ((bytes, _), ends))| packed_names(bytes.as_bytes(), ends, p))
        .collect::<PyResult<_>>()?;
    let limit = max_predictions.and_then(|l| l.0);
    let parts: Vec<(&[f64], &[&str])> =
        similarities.iter().zip(&texts).map(|(s, n)| (s.as_slice(), n.as_slice())).collect();
    let merged = unlocked(py, || guard(|| crate::merge_ranked(&parts, limit)))?.map_err(not_ranked)?;
    let sims: Vec<f64> = merged.iter().map(|&(p, i)| parts[p as usize].0[i as usize]).collect();
    let out = PyList::new(py, merged.iter().map(|&(p, i)| parts[p as usize].1[i as usize]))?;
    Ok((PyArray1::from_vec(py, sims), out))
}

fn not_ranked(bad: crate::NotRanked) -> PyErr {
    if bad.position == usize::MAX {
        PyValueError::new_err(format!("part {}: similarities and names differ in length", bad.part))
    } else {
        PyValueError::new_err(format!(
            "part {} is not in result order (similarity descending, then name ascending) at position {}",
            bad.part, bad.position
        ))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merge_ranked, m)?)?;
    m.add_function(wrap_pyfunction!(merge_packed, m)?)?;
    Ok(())
}
