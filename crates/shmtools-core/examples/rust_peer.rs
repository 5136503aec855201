//! A Rust process and a Node process on the same pipes: this program feeds
//! requests into `<to_node>` and reads the answers from `<from_node>`.
//!
//!   rust_peer <region> <to_node> <from_node> <count>
//!
//! It waits for the region (made by whoever runs SHMMain) and creates its
//! request pipe; examples/node_answerer.ts creates the answer pipe. Each
//! request is a Tab {id, numbers: Arr, label}; each answer must be
//! {id, sum, label: label.toUpperCase()}. Exits 0 only if every answer is right.

use std::time::Duration;

use shmtools_core::{AttachOptions, ClientSide, Key, ServerSide, Value};

fn field<'v>(t: &'v [(Key, Value)], name: &str) -> Option<&'v Value> {
    t.iter()
        .find(|(k, _)| matches!(k, Key::Str(s) if s == name))
        .map(|(_, v)| v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: rust_peer <region> <to_node> <from_node> <count>");
        std::process::exit(2);
    }
    let (region, to_node, from_node) = (&args[1], &args[2], &args[3]);
    let count: i64 = args[4].parse().expect("count");
    let opts = AttachOptions {
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let server = ServerSide::start(region, to_node, 8, &opts).expect("request pipe");
    let client = ClientSide::start(region, from_node, &opts).expect("answer pipe");
    let requests = server.pipe().expect("open request pipe");
    let answers = client.pipe().expect("open answer pipe");
    let mut ok = 0;
    for id in 0..count {
        let numbers: Vec<Value> = (0..=id).map(Value::Int).collect();
        let label = format!("request {id} from rust");
        let req = Value::Tab(vec![
            (Key::Str("id".into()), Value::Int(id)),
            (Key::Str("numbers".into()), Value::Arr(numbers)),
            (Key::Str("label".into()), Value::Str(label.clone())),
        ]);
        assert!(requests
            .enqueue_value(&req, Some(Duration::from_secs(30)))
            .expect("enqueue"));
        let answer = answers
            .dequeue_value(Some(Duration::from_secs(30)))
            .expect("dequeue")
            .expect("an answer in time");
        let Value::Tab(t) = answer else {
            panic!("answer is not a table: {answer:?}")
        };
        let want_sum = id * (id + 1) / 2;
        let right = field(&t, "id") == Some(&Value::Int(id))
            && field(&t, "sum") == Some(&Value::Int(want_sum))
            && field(&t, "label") == Some(&Value::Str(label.to_uppercase()));
        if right {
            ok += 1;
        } else {
            eprintln!("wrong answer to {id}: {t:?}");
        }
    }
    // Tell the Node side we are done.
    let bye = Value::Tab(vec![(Key::Str("id".into()), Value::Int(-1))]);
    requests
        .enqueue_value(&bye, Some(Duration::from_secs(30)))
        .expect("enqueue end marker");
    println!("rust_peer: {ok}/{count} answers right");
    std::process::exit(if ok == count { 0 } else { 1 });
}
