//! `house-price-api replay`: sends the real Ames holdout houses through a running API (optionally
//! shifted, e.g. `--shift squareFeet=+30%`), then records their true sale prices as outcomes, so
//! accuracy and drift can be watched appearing.

use std::str::FromStr;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::ReplayConfig;
use crate::model::dataset::{holdout_split, read_dataset};
use crate::model::features::FeatureKind;
use crate::model::{Feature, FeatureValue, HouseFeatures};

/// A change applied to one feature of every replayed house.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    /// The feature.
    pub feature: Feature,
    /// How it changes.
    pub change: Change,
}

/// How a shifted feature changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Multiply by `1 + p/100` (`+30%`, `-10%`).
    Percent(f64),
    /// Add a number (`+100`, `-5`).
    Add(f64),
    /// Replace with a label (`Gilbert`).
    Set(String),
}

impl FromStr for Shift {
    type Err = anyhow::Error;

    /// `feature=+30%`, `feature=-5` or `feature=Label`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, change) =
            s.split_once('=').context("a shift looks like feature=+30%, feature=-5 or feature=Label")?;
        let feature = Feature::from_name(name).with_context(|| format!("unknown feature {name:?}"))?;
        let change = if let Some(p) = change.strip_suffix('%') {
            Change::Percent(p.parse().with_context(|| format!("bad percentage {change:?}"))?)
        } else if let Ok(n) = change.parse::<f64>() {
            Change::Add(n)
        } else {
            Change::Set(change.to_owned())
        };
        match (feature.kind(), &change) {
            (FeatureKind::Categorical, Change::Set(_))
            | (FeatureKind::Numeric, Change::Percent(_) | Change::Add(_)) => {}
            _ => bail!("shift {s:?} does not fit {feature}'s kind"),
        }
        Ok(Self { feature, change })
    }
}

/// A part of the holdout selected by one numeric feature (`squareFeet=top30%`).
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The feature.
    pub feature: Feature,
    /// The largest values (else the smallest).
    pub top: bool,
    /// Share of the houses kept, in percent.
    pub percent: f64,
}

impl FromStr for Slice {
    type Err = anyhow::Error;

    /// `feature=top30%` or `feature=bottom30%`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let usage = || format!("a slice looks like squareFeet=top30% or squareFeet=bottom30%, not {s:?}");
        let (name, part) = s.split_once('=').with_context(usage)?;
        let feature = Feature::from_name(name).with_context(|| format!("unknown feature {name:?}"))?;
        if feature.kind() == FeatureKind::Categorical {
            bail!("{feature} is categorical: a slice needs a numeric feature");
        }
        let (top, percent) = match (part.strip_prefix("top"), part.strip_prefix("bottom")) {
            (Some(p), _) => (true, p),
            (_, Some(p)) => (false, p),
            _ => bail!(usage()),
        };
        let percent: f64 = percent.strip_suffix('%').and_then(|p| p.parse().ok()).with_context(usage)?;
        if !(percent > 0.0 && percent <= 100.0) {
            bail!("a slice keeps between 0 and 100 % of the houses, not {percent}");
        }
        Ok(Self { feature, top, percent })
    }
}

impl Slice {
    /// The houses of `houses` in the slice, in their original order.
    fn select<T>(&self, houses: Vec<(HouseFeatures, T)>) -> Vec<(HouseFeatures, T)> {
        let value = |h: &HouseFeatures| match h.get(self.feature) {
            Some(FeatureValue::Number(x)) => x,
            _ => f64::NAN,
        };
        let mut order: Vec<usize> = (0..houses.len()).collect();
        order.sort_by(|&a, &b| value(&houses[a].0).total_cmp(&value(&houses[b].0)));
        if self.top {
            order.reverse();
        }
        let keep = ((houses.len() as f64) * self.percent / 100.0).round() as usize;
        let mut kept: Vec<usize> = order.into_iter().take(keep).collect();
        kept.sort_unstable();
        let mut houses: Vec<Option<(HouseFeatures, T)>> = houses.into_iter().map(Some).collect();
        kept.into_iter().filter_map(|i| houses[i].take()).collect()
    }
}

impl Shift {
    fn apply(&self, house: &mut HouseFeatures) {
        let value = house.get(self.feature);
        let shifted = match (&self.change, value) {
            (Change::Percent(p), Some(FeatureValue::Number(x))) => FeatureValue::Number(x * (1.0 + p / 100.0)),
            (Change::Add(a), Some(FeatureValue::Number(x))) => FeatureValue::Number(x + a),
            (Change::Set(label), _) => FeatureValue::Category(label.clone()),
            (_, _) => return,
        };
        match (self.feature, shifted) {
            (Feature::SquareFeet, FeatureValue::Number(x)) => house.square_feet = x,
            (Feature::Bedrooms, FeatureValue::Number(x)) => house.bedrooms = x.round() as i64,
            (Feature::Bathrooms, FeatureValue::Number(x)) => house.bathrooms = x,
            (f, v) => {
                house.optional.insert(f, v);
            }
        }
    }
}

/// One replayed house.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// `Prediction.id`.
    pub id: String,
    /// Predicted price.
    pub price: f64,
    /// True sale price.
    pub actual: f64,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// Houses sent.
    pub sent: usize,
    /// Houses priced.
    pub priced: Vec<Replayed>,
    /// Houses refused (with their error messages).
    pub rejected: Vec<String>,
    /// Outcomes recorded.
    pub outcomes_recorded: usize,
}

impl ReplaySummary {
    /// Mean absolute error of the priced houses, computed here from the answers.
    pub fn mae(&self) -> f64 {
        self.priced.iter().map(|r| (r.price - r.actual).abs()).sum::<f64>() / self.priced.len().max(1) as f64
    }
}

/// The GraphQL `HouseInput` of a house (integers as Int, the flag as Boolean).
pub fn house_input(house: &HouseFeatures) -> Value {
    let mut input = serde_json::Map::new();
    for feature in Feature::ALL {
        let Some(value) = house.get(feature) else { continue };
        let json = match (feature, value) {
            (Feature::CentralAir, FeatureValue::Number(x)) => json!(x >= 0.5),
            (
                Feature::Bedrooms
                | Feature::YearBuilt
                | Feature::YearRemodeled
                | Feature::GarageCars
                | Feature::Fireplaces
                | Feature::Kitchens,
                FeatureValue::Number(x),
            ) => json!(x.round() as i64),
            (_, FeatureValue::Number(x)) => json!(x),
            (_, FeatureValue::Category(label)) => json!(label),
        };
        input.insert(feature.name().to_owned(), json);
    }
    Value::Object(input)
}

async fn post(
    client: &reqwest::Client,
    options: &ReplayConfig,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let mut request = client.post(format!("{}/graphql", options.url.trim_end_matches('/')));
    if let Some(key) = &options.api_key {
        request = request.header("x-api-key", key);
    }
    let response = request
        .header("user-agent", concat!("house-price-api-replay/", env!("CARGO_PKG_VERSION")))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .context("cannot reach the service")?;
    let body: Value = response.json().await.context("the service did not answer JSON")?;
    if let Some(errors) = body.get("errors") {
        bail!("the service refused the request: {errors}");
    }
    Ok(body)
}

/// Replays the holdout houses, then records their sale prices (with an API key).
pub async fn run(options: &ReplayConfig) -> anyhow::Result<ReplaySummary> {
    let data = read_dataset(&options.data)?;
    let shifts: Vec<Shift> = options.shifts.iter().map(|s| s.parse()).collect::<anyhow::Result<_>>()?;
    let slice: Option<Slice> = options.slice.as_deref().map(str::parse).transpose()?;
    let (_, holdout) = holdout_split(data.houses.len(), options.holdout_fraction, options.seed);
    let mut houses: Vec<(HouseFeatures, f64)> =
        holdout.iter().map(|&i| (data.houses[i].clone(), data.prices[i])).collect();
    if let Some(slice) = &slice {
        houses = slice.select(houses);
    }
    houses.truncate(options.limit.unwrap_or(houses.len()));
    for (house, _) in &mut houses {
        for shift in &shifts {
            shift.apply(house);
        }
    }
    let client = reqwest::Client::new();
    let mut summary = ReplaySummary { sent: houses.len(), ..Default::default() };
    for chunk in houses.chunks(options.batch.max(1)) {
        let inputs: Vec<Value> = chunk.iter().map(|(h, _)| house_input(h)).collect();
        let body = post(
            &client,
            options,
            "query($inputs: [HouseInput!]!, $model: String) { predictPrices(inputs: $inputs, model: $model) {
                index prediction { id price } error { code field message } } }",
            json!({ "inputs": inputs, "model": options.model }),
        )
        .await?;
        let items = body["data"]["predictPrices"].as_array().context("no predictPrices in the answer")?;
        for (item, (_, actual)) in items.iter().zip(chunk) {
            match (item["prediction"]["id"].as_str(), item["prediction"]["price"].as_f64()) {
                (Some(id), Some(price)) => summary.priced.push(Replayed { id: id.to_owned(), price, actual: *actual }),
                _ => summary.rejected.push(item["error"]["message"].as_str().unwrap_or("?").to_owned()),
            }
        }
    }
    if options.api_key.is_some() {
        for chunk in summary.priced.chunks(500) {
            let outcomes: Vec<Value> =
                chunk.iter().map(|r| json!({ "predictionId": r.id, "actualPrice": r.actual })).collect();
            let body = post(
                &client,
                options,
                "mutation($o: [OutcomeInput!]!) { recordOutcomes(outcomes: $o) { index outcome { revision } error { code message } } }",
                json!({ "o": outcomes }),
            )
            .await?;
            let items = body["data"]["recordOutcomes"].as_array().context("no recordOutcomes in the answer")?;
            summary.outcomes_recorded += items.iter().filter(|i| i["outcome"].is_object()).count();
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_parse_and_apply() {
        let mut house = HouseFeatures::new(1000.0, 3, 2.0).with(Feature::YearBuilt, FeatureValue::Number(1990.0));
        "squareFeet=+30%".parse::<Shift>().unwrap().apply(&mut house);
        "yearBuilt=-10".parse::<Shift>().unwrap().apply(&mut house);
        "neighborhood=Gilbert".parse::<Shift>().unwrap().apply(&mut house);
        assert!((house.square_feet - 1300.0).abs() < 1e-9);
        assert_eq!(house.get(Feature::YearBuilt), Some(FeatureValue::Number(1980.0)));
        assert_eq!(house.get(Feature::Neighborhood), Some(FeatureValue::Category("Gilbert".into())));
        assert!("squareFeet=big".parse::<Shift>().is_err());
        assert!("nope=+1%".parse::<Shift>().is_err());
    }

    #[test]
    fn slices_keep_the_top_or_bottom_share_in_order() {
        let houses: Vec<(HouseFeatures, usize)> = [900.0, 2500.0, 1200.0, 3000.0, 1500.0]
            .iter()
            .enumerate()
            .map(|(i, &s)| (HouseFeatures::new(s, 3, 2.0), i))
            .collect();
        let top = "squareFeet=top40%".parse::<Slice>().unwrap().select(houses.clone());
        assert_eq!(top.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [1, 3]);
        let bottom = "squareFeet=bottom60%".parse::<Slice>().unwrap().select(houses);
        assert_eq!(bottom.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [0, 2, 4]);
        assert!("squareFeet=middle30%".parse::<Slice>().is_err());
        assert!("neighborhood=top30%".parse::<Slice>().is_err());
        assert!("squareFeet=top0%".parse::<Slice>().is_err());
    }

    #[test]
    fn inputs_use_graphql_types() {
        let house = HouseFeatures::new(1000.5, 3, 1.5)
            .with(Feature::CentralAir, FeatureValue::Number(1.0))
            .with(Feature::GarageCars, FeatureValue::Number(2.0));
        assert_eq!(
            house_input(&house),
            json!({ "squareFeet": 1000.5, "bedrooms": 3, "bathrooms": 1.5, "centralAir": true, "garageCars": 2 })
        );
    }
}
