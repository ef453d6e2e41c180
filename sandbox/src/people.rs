//! The generated company: one list of people that every fake vendor derives its data from,
//! so a person looks the same in Sage People, Brex and Expensify.

use std::collections::HashMap;

use jiff::{Span, civil::Date};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Where someone is in their employment at "today".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Started at least two weeks ago and has not left: present in every system.
    Regular,
    /// Starts today or within a few days either side: in Sage People only (an onboarding candidate).
    Starter,
    /// Has an end date before today: Sage says inactive, Brex and Expensify still have them.
    Leaver,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkLocation {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub line3: Option<String>,
    pub city: String,
    /// State or county.
    pub region: String,
    pub postal_code: String,
    /// Country name as Sage People shows it.
    pub country: String,
    /// ISO 3166-1 alpha-2, as Brex addresses want it.
    pub country_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub employee_id: String,
    /// Salesforce-style 18-character record id; ascending with the person's index.
    pub sage_id: String,
    pub first_name: String,
    pub last_name: String,
    pub full_name: String,
    pub email: String,
    pub department: String,
    pub job_title: String,
    pub work_location: WorkLocation,
    pub start_date: Date,
    pub end_date: Option<Date>,
    /// Sage's `currentEmployment.active`: false only for leavers.
    pub active: bool,
    /// None for the CEO only.
    pub manager_email: Option<String>,
    pub lifecycle: Lifecycle,
}

pub(crate) const COMPANY_DOMAIN: &str = "acme.test";

/// (name, weight, titles): the first title is the department head's.
pub(crate) const DEPARTMENTS: &[(&str, u64, &[&str])] = &[
    (
        "Engineering",
        30,
        &[
            "VP of Engineering",
            "Engineering Manager",
            "Staff Engineer",
            "Senior Software Engineer",
            "Software Engineer",
            "QA Engineer",
        ],
    ),
    ("Sales", 15, &["VP of Sales", "Account Executive", "Sales Development Representative", "Sales Engineer"]),
    ("Customer Success", 10, &["Head of Customer Success", "Customer Success Manager", "Support Specialist"]),
    ("Product", 8, &["Head of Product", "Product Manager", "Product Designer", "UX Researcher"]),
    ("Marketing", 8, &["VP of Marketing", "Marketing Manager", "Content Strategist", "Growth Marketer"]),
    ("Finance", 6, &["Chief Financial Officer", "Controller", "Accountant", "Financial Analyst"]),
    ("People", 6, &["Head of People", "HR Business Partner", "Recruiter", "People Operations Specialist"]),
    ("IT", 6, &["Head of IT", "IT Administrator", "Systems Engineer", "Helpdesk Technician"]),
    ("Operations", 6, &["Chief Operating Officer", "Operations Manager", "Office Manager"]),
    ("Legal", 5, &["General Counsel", "Corporate Counsel", "Paralegal"]),
];

pub(crate) const EXECUTIVE: &str = "Executive";
pub(crate) const CEO_TITLE: &str = "Chief Executive Officer";

struct Site {
    weight: u64,
    name: &'static str,
    line1: &'static str,
    line2: Option<&'static str>,
    city: &'static str,
    region: &'static str,
    postal_code: &'static str,
    country: &'static str,
    country_code: &'static str,
}

const SITES: &[Site] = &[
    Site {
        weight: 40,
        name: "San Francisco HQ",
        line1: "500 Harbor View Street",
        line2: Some("Floor 4"),
        city: "San Francisco",
        region: "CA",
        postal_code: "94105",
        country: "United States",
        country_code: "US",
    },
    Site {
        weight: 25,
        name: "New York Office",
        line1: "85 Pearl Lane",
        line2: Some("Suite 1200"),
        city: "New York",
        region: "NY",
        postal_code: "10004",
        country: "United States",
        country_code: "US",
    },
    Site {
        weight: 15,
        name: "Austin Office",
        line1: "600 Riverside Avenue",
        line2: None,
        city: "Austin",
        region: "TX",
        postal_code: "78701",
        country: "United States",
        country_code: "US",
    },
    Site {
        weight: 20,
        name: "London Office",
        line1: "1 Chapel Yard",
        line2: Some("Level 5"),
        city: "London",
        region: "England",
        postal_code: "EC2M 2PF",
        country: "United Kingdom",
        country_code: "GB",
    },
];

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Sophia",
    "Elijah",
    "Charlotte",
    "James",
    "Ava",
    "William",
    "Isabella",
    "Benjamin",
    "Mia",
    "Lucas",
    "Evelyn",
    "Henry",
    "Harper",
    "Theo",
    "Aisha",
    "Mateo",
    "Priya",
    "Kenji",
    "Fatima",
    "Diego",
    "Mei",
    "Omar",
    "Chloe",
    "Samuel",
    "Grace",
    "Daniel",
    "Zoe",
    "Jack",
    "Nora",
    "Leo",
    "Hannah",
    "Ethan",
    "Lily",
    "Aarav",
    "Sofia",
    "Mohammed",
    "Ingrid",
    "Tomas",
    "Yuki",
    "Carlos",
    "Naomi",
    "Ravi",
    "Elena",
    "Kwame",
    "Julia",
    "Marcus",
    "Anika",
    "Felix",
    "Rosa",
    "Victor",
    "Leah",
    "Hugo",
    "Maya",
    "Isaac",
    "Clara",
    "Ivan",
    "Ruth",
    "Adam",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Campbell",
    "Mitchell",
    "Carter",
    "Patel",
    "Kim",
    "Okafor",
    "Schmidt",
    "Rossi",
    "Novak",
    "Tanaka",
    "Haddad",
    "Larsen",
    "Silva",
    "Murphy",
    "O'Brien",
    "Cohen",
    "Singh",
    "Ivanova",
    "Mensah",
    "Dubois",
    "Kowalski",
];

fn days(n: i64) -> Span {
    Span::new().days(n)
}

/// Salesforce ids are case-sensitive base62; this alphabet is in ASCII order, so string order
/// equals numeric order and marker paging by id is a plain sort.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 15-character id plus Salesforce's 3-character case checksum.
pub(crate) fn sage_id(n: u64) -> String {
    let mut tail = [b'0'; 6];
    let mut v = n;
    for slot in tail.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let mut id = String::from("a2K8d0000");
    id.push_str(std::str::from_utf8(&tail).unwrap_or("000000"));
    let checksum: String = id
        .as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits] as char
        })
        .collect();
    id + &checksum
}

fn weighted<'a, T>(rng: &mut Rng, items: &'a [T], weight: impl Fn(&T) -> u64) -> (usize, &'a T) {
    let total: u64 = items.iter().map(&weight).sum();
    let mut roll = rng.below(total);
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if roll < w {
            return (i, item);
        }
        roll -= w;
    }
    (items.len() - 1, &items[items.len() - 1])
}

/// Generates `n` people deterministically from `seed`, relative to `today`.
///
/// Index 0 is the CEO; the next few are department heads reporting to the CEO; everyone else
/// reports to an earlier regular person in their department. A few people start around `today`
/// (starters) and a few left shortly before it (leavers). Cost is linear in `n`.
pub fn generate_people(seed: u64, n: usize, today: Date) -> Vec<Person> {
    let mut rng = Rng::new(seed);
    let heads = DEPARTMENTS.len().min((n / 8).max(1)).min(n.saturating_sub(1));
    let pool = n.saturating_sub(1 + heads);
    let per_kind = (pool / 3).min((n / 50).max(3));

    // Pick starters and leavers from the non-reserved indices by a partial shuffle.
    let mut lifecycle = vec![Lifecycle::Regular; n];
    let mut candidates: Vec<usize> = (1 + heads..n).collect();
    for k in 0..(2 * per_kind).min(candidates.len()) {
        let j = k + rng.below((candidates.len() - k) as u64) as usize;
        candidates.swap(k, j);
        lifecycle[candidates[k]] = if k < per_kind { Lifecycle::Starter } else { Lifecycle::Leaver };
    }

    let sage_base = 0x4000 + rng.below(100_000);
    let mut used_emails: HashMap<String, u32> = HashMap::with_capacity(n);
    let mut dept_regulars: Vec<Vec<usize>> = vec![Vec::new(); DEPARTMENTS.len()];
    let mut people: Vec<Person> = Vec::with_capacity(n);
    let mut first_starter = true;

    for (i, &kind) in lifecycle.iter().enumerate() {
        let first = *rng.pick(FIRST_NAMES);
        let last = *rng.pick(LAST_NAMES);
        let local = format!("{}.{}", first.to_ascii_lowercase(), last.to_ascii_lowercase().replace('\'', ""));
        let seen = used_emails.entry(local.clone()).or_insert(0);
        *seen += 1;
        let email =
            if *seen == 1 { format!("{local}@{COMPANY_DOMAIN}") } else { format!("{local}{seen}@{COMPANY_DOMAIN}") };

        let (dept_idx, department, job_title) = if i == 0 {
            (None, EXECUTIVE.to_string(), CEO_TITLE.to_string())
        } else if i <= heads {
            let (name, _, titles) = DEPARTMENTS[i - 1];
            (Some(i - 1), name.to_string(), titles[0].to_string())
        } else {
            let (d, (name, _, titles)) = weighted(&mut rng, DEPARTMENTS, |d| d.1);
            (Some(d), name.to_string(), rng.pick(&titles[1..]).to_string())
        };

        let manager = match dept_idx {
            None => None,
            Some(_) if i <= heads => Some(0),
            Some(d) => {
                // Early regulars of a department are its seniors, so they manage the rest.
                let regulars = &dept_regulars[d];
                if regulars.is_empty() {
                    Some(0)
                } else {
                    let span = 1 + regulars.len() / 6;
                    Some(regulars[rng.below(span as u64) as usize])
                }
            }
        };

        let (start_date, end_date) = match kind {
            _ if i == 0 => (today.saturating_sub(days(rng.range_i64(2500, 3000))), None),
            Lifecycle::Regular => (today.saturating_sub(days(rng.range_i64(14, 2900))), None),
            Lifecycle::Starter => {
                let offset = if first_starter {
                    first_starter = false;
                    0
                } else {
                    rng.range_i64(-3, 7)
                };
                (today.saturating_add(days(offset)), None)
            }
            Lifecycle::Leaver => (
                today.saturating_sub(days(rng.range_i64(120, 2500))),
                Some(today.saturating_sub(days(rng.range_i64(1, 20)))),
            ),
        };

        let (_, site) = weighted(&mut rng, SITES, |s| s.weight);
        let work_location = WorkLocation {
            name: site.name.to_string(),
            line1: site.line1.to_string(),
            line2: site.line2.map(str::to_string),
            line3: None,
            city: site.city.to_string(),
            region: site.region.to_string(),
            postal_code: site.postal_code.to_string(),
            country: site.country.to_string(),
            country_code: site.country_code.to_string(),
        };

        if kind == Lifecycle::Regular
            && let Some(d) = dept_idx
        {
            dept_regulars[d].push(i);
        }

        people.push(Person {
            employee_id: format!("E{:06}", i + 1),
            sage_id: sage_id(sage_base + i as u64),
            first_name: first.to_string(),
            last_name: last.to_string(),
            full_name: format!("{first} {last}"),
            email,
            department,
            job_title,
            work_location,
            start_date,
            end_date,
            active: kind != Lifecycle::Leaver,
            manager_email: manager.map(|m: usize| people[m].email.clone()),
            lifecycle: kind,
        });
    }
    people
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        jiff::civil::date(2026, 11, 22)
    }

    #[test]
    fn deterministic_and_varied() {
        let a = generate_people(42, 50, today());
        assert_eq!(a, generate_people(42, 50, today()));
        assert_ne!(a, generate_people(43, 50, today()));
    }

    #[test]
    fn shape_of_default_company() {
        let people = generate_people(1, 25, today());
        assert_eq!(people.len(), 25);
        let count = |k| people.iter().filter(|p| p.lifecycle == k).count();
        assert_eq!(count(Lifecycle::Starter), 3);
        assert_eq!(count(Lifecycle::Leaver), 3);
        assert!(people.iter().any(|p| p.start_date == today()));
        assert!(people[0].manager_email.is_none());
        for p in &people[1..] {
            let boss = p.manager_email.as_deref().unwrap();
            let boss = people.iter().find(|q| q.email == boss).unwrap();
            assert_eq!(boss.lifecycle, Lifecycle::Regular);
        }
        for p in &people {
            assert!(p.email.is_ascii() && p.full_name.is_ascii());
            match p.lifecycle {
                Lifecycle::Leaver => assert!(p.end_date.unwrap() < today() && !p.active),
                Lifecycle::Starter => assert!(p.start_date >= today().saturating_sub(days(3))),
                Lifecycle::Regular => assert!(p.start_date <= today().saturating_sub(days(14))),
            }
        }
    }

    #[test]
    fn ids_sorted_and_emails_unique() {
        let people = generate_people(9, 5000, today());
        assert!(people.windows(2).all(|w| w[0].sage_id < w[1].sage_id));
        assert!(people.iter().all(|p| p.sage_id.len() == 18));
        let emails: std::collections::HashSet<_> = people.iter().map(|p| &p.email).collect();
        assert_eq!(emails.len(), people.len());
    }

    #[test]
    fn tiny_companies() {
        for n in 0..6 {
            assert_eq!(generate_people(3, n, today()).len(), n);
        }
    }

    #[test]
    fn salesforce_checksum() {
        // Checksum bits come from upper-case letters in each 5-character chunk.
        let id = sage_id(0);
        assert_eq!(&id[..15], "a2K8d0000000000");
        assert_eq!(&id[15..], "EAA");
    }
}
