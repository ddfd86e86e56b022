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
    let (_, holdout) = holdout_split(data.houses.len(), options.holdout_fraction, options.seed);
    let take = options.limit.unwrap_or(holdout.len()).min(holdout.len());
    let houses: Vec<(HouseFeatures, f64)> = holdout[..take]
        .iter()
        .map(|&i| {
            let mut house = data.houses[i].clone();
            for shift in &shifts {
                shift.apply(&mut house);
            }
            (house, data.prices[i])
        })
        .collect();
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
