// The Boost side of bench/rust.sh: boost::interprocess::message_queue between
// two processes, driven by the Rust harness
// (crates/shmtools-core/examples/bench_rust.rs), which starts this program in
// one of these roles:
//
//   boost_mq_peer version
//       print the Boost version and exit
//   boost_mq_peer recv <queue> <count> <size> <capacity>
//       create <queue> (capacity messages of size bytes), print "ready",
//       receive <count> messages, checking the sequence number in the first
//       8 bytes, then print "t1=<CLOCK_MONOTONIC ns after the last receive>"
//       and remove the queue
//   boost_mq_peer send <queue> <count> <size>
//       open <queue>, print "t0=<CLOCK_MONOTONIC ns before the first send>",
//       send <count> messages numbered 0, 1, ...
//   boost_mq_peer echo <request queue> <answer queue> <count>
//       create both queues (8-byte messages), print "ready", send every
//       request back on the answer queue, <count> times; then remove both
//   boost_mq_peer ping <request queue> <answer queue> <warm-up> <count>
//       open both queues; time <count> round trips (after <warm-up> untimed
//       ones) and print "samples <ns> <ns> ..."
//
// Exits non-zero with a message on stderr on any error.

#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/version.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bip = boost::interprocess;

static uint64_t now_ns() {
    // steady_clock is CLOCK_MONOTONIC on Linux: the same clock the Rust
    // harness reads, so times from the two processes can be subtracted.
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
}

static uint64_t arg_u64(const char* s) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != '\0') {
        std::fprintf(stderr, "boost_mq_peer: not a number: %s\n", s);
        std::exit(2);
    }
    return static_cast<uint64_t>(v);
}

static int usage() {
    std::fprintf(stderr,
                 "usage: boost_mq_peer version | recv Q N SIZE CAP | send Q N SIZE |"
                 " echo REQ ANS N | ping REQ ANS WARM N\n");
    return 2;
}

static int recv_role(const char* name, uint64_t n, uint64_t size, uint64_t cap) {
    bip::message_queue::remove(name);
    bip::message_queue mq(bip::create_only, name, cap, size);
    std::printf("ready\n");
    std::fflush(stdout);
    std::vector<char> buf(size);
    uint64_t wrong = 0;
    for (uint64_t i = 0; i < n; i++) {
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        mq.receive(buf.data(), buf.size(), got, prio);
        uint64_t seq = 0;
        std::memcpy(&seq, buf.data(), sizeof seq);
        if (got != size || seq != i) wrong++;
    }
    uint64_t t1 = now_ns();
    bip::message_queue::remove(name);
    if (wrong) {
        std::fprintf(stderr, "boost_mq_peer recv: %llu messages out of order or short\n",
                     static_cast<unsigned long long>(wrong));
        return 1;
    }
    std::printf("t1=%llu\n", static_cast<unsigned long long>(t1));
    return 0;
}

static int send_role(const char* name, uint64_t n, uint64_t size) {
    bip::message_queue mq(bip::open_only, name);
    std::vector<char> buf(size, 'x');
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) {
        std::memcpy(buf.data(), &i, sizeof i);
        mq.send(buf.data(), buf.size(), 0);
    }
    std::printf("t0=%llu\n", static_cast<unsigned long long>(t0));
    return 0;
}

static int echo_role(const char* req_name, const char* ans_name, uint64_t n) {
    bip::message_queue::remove(req_name);
    bip::message_queue::remove(ans_name);
    bip::message_queue req(bip::create_only, req_name, 16, sizeof(uint64_t));
    bip::message_queue ans(bip::create_only, ans_name, 16, sizeof(uint64_t));
    std::printf("ready\n");
    std::fflush(stdout);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = 0;
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        req.receive(&v, sizeof v, got, prio);
        ans.send(&v, sizeof v, 0);
    }
    bip::message_queue::remove(req_name);
    bip::message_queue::remove(ans_name);
    return 0;
}

static int ping_role(const char* req_name, const char* ans_name, uint64_t warm, uint64_t n) {
    bip::message_queue req(bip::open_only, req_name);
    bip::message_queue ans(bip::open_only, ans_name);
    std::vector<uint64_t> samples;
    samples.reserve(n);
    for (uint64_t i = 0; i < warm + n; i++) {
        uint64_t t = now_ns();
        req.send(&i, sizeof i, 0);
        uint64_t v = 0;
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        ans.receive(&v, sizeof v, got, prio);
        uint64_t dt = now_ns() - t;
        if (v != i || got != sizeof v) {
            std::fprintf(stderr, "boost_mq_peer ping: answer %llu to request %llu\n",
                         static_cast<unsigned long long>(v), static_cast<unsigned long long>(i));
            return 1;
        }
        if (i >= warm) samples.push_back(dt);
    }
    std::string line = "samples";
    for (uint64_t s : samples) {
        line += ' ';
        line += std::to_string(s);
    }
    std::printf("%s\n", line.c_str());
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2) return usage();
    std::string role = argv[1];
    try {
        if (role == "version" && argc == 2) {
            std::printf("%d.%d.%d\n", BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000,
                        BOOST_VERSION % 100);
            return 0;
        }
        if (role == "recv" && argc == 6)
            return recv_role(argv[2], arg_u64(argv[3]), arg_u64(argv[4]), arg_u64(argv[5]));
        if (role == "send" && argc == 5)
            return send_role(argv[2], arg_u64(argv[3]), arg_u64(argv[4]));
        if (role == "echo" && argc == 5) return echo_role(argv[2], argv[3], arg_u64(argv[4]));
        if (role == "ping" && argc == 6)
            return ping_role(argv[2], argv[3], arg_u64(argv[4]), arg_u64(argv[5]));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "boost_mq_peer %s: %s\n", role.c_str(), e.what());
        return 1;
    }
    return usage();
}
