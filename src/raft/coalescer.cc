#include "raft/coalescer.h"

#include "common/verify.h"

namespace hamq::raft {

void Outbox::add(const Message& message) {
  HAMQ_VERIFY(message.from == self_, "a message from another node in this outbox");
  NodeBatch& batch = batches_[message.to];
  batch.from = self_;
  batch.to = message.to;
  Beat beat{.group = message.group,
            .term = message.term,
            .commit = message.commit,
            .from_incarnation = message.from_incarnation};
  if (message.type == MessageType::heartbeat) {
    batch.heartbeats.push_back(beat);
  } else if (message.type == MessageType::heartbeat_response) {
    // A member catching up says where its log ends (Raft::handle_heartbeat): its last index + 1
    // (0: nothing said).
    beat.commit = message.reject ? message.index + 1 : LogIndex{0};
    batch.heartbeat_responses.push_back(beat);
  } else {
    batch.messages.push_back(message);
  }
}

std::vector<NodeBatch> Outbox::take() {
  std::vector<NodeBatch> out;
  out.reserve(batches_.size());
  for (auto& [to, batch] : batches_) out.push_back(std::move(batch));
  batches_.clear();
  return out;
}

std::vector<Message> expand(const NodeBatch& batch) {
  std::vector<Message> out;
  out.reserve(batch.count());
  auto from_beat = [&](const Beat& beat, MessageType type) {
    out.push_back(Message{.type = type,
                          .group = beat.group,
                          .from = batch.from,
                          .to = batch.to,
                          .from_incarnation = beat.from_incarnation,
                          .term = beat.term,
                          .commit = beat.commit});
  };
  for (const Beat& beat : batch.heartbeats) from_beat(beat, MessageType::heartbeat);
  for (const Beat& beat : batch.heartbeat_responses) {
    from_beat(beat, MessageType::heartbeat_response);
    Message& answer = out.back();
    answer.commit = LogIndex{0};
    if (beat.commit.value > 0) {
      answer.reject = true;
      answer.index = LogIndex{beat.commit.value - 1};
    }
  }
  for (const Message& message : batch.messages) out.push_back(message);
  return out;
}

}  // namespace hamq::raft
