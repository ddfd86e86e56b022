//! BENCHMARK ONLY: what pricing and explaining one house costs per model, in-process (no HTTP, no
//! log): `score` (price, interval, estimated error, drift bins) and `contributions` (exact Shapley
//! values), on the 585 holdout houses, three inputs and all twenty. `make bench-models` runs it.
//!
//! Built by `cargo build --release --example model_cost`; never part of the service.

use std::time::Instant;

use house_price_api::model::dataset::{holdout_split, read_dataset};
use house_price_api::model::{HouseFeatures, ModelRoles, ModelSet};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Passes over the holdout per measurement; the best of `ROUNDS` is reported.
const PASSES: usize = 20;
const ROUNDS: usize = 5;

fn best_micros_per_house(houses: &[HouseFeatures], mut f: impl FnMut(&HouseFeatures)) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PASSES {
                houses.iter().for_each(&mut f);
            }
            started.elapsed().as_secs_f64() * 1e6 / (PASSES * houses.len()) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> anyhow::Result<()> {
    let data = read_dataset("data/ames_housing.csv".as_ref())?;
    let (_, holdout) = holdout_split(data.houses.len(), 0.2, 42);
    let rich: Vec<HouseFeatures> = holdout.iter().map(|&i| data.houses[i].clone()).collect();
    let seed: Vec<HouseFeatures> =
        rich.iter().map(|h| HouseFeatures::new(h.square_feet, h.bedrooms, h.bathrooms)).collect();
    let set = ModelSet::load("models".as_ref(), &ModelRoles::new("baseline-linear"))?;
    println!("| model | inputs | score µs/house | contributions µs/house |");
    println!("|---|---|---|---|");
    for model in set.models() {
        for (inputs, houses) in [("3", &seed), ("20", &rich)] {
            let score = best_micros_per_house(houses, |h| {
                std::hint::black_box(model.score(&[h]));
            });
            let explain = best_micros_per_house(houses, |h| {
                std::hint::black_box(model.contributions(h).ok());
            });
            println!("| {} | {inputs} | {score:.1} | {explain:.1} |", model.id());
        }
    }
    Ok(())
}
