// The C++ that cellshm-codegen writes for codegen/tests/protos/shapes, compiled with
// every warning an error: packages with dots, nested message types, well-known types,
// methods named like C++ keywords and an empty service. Each servicer method is
// overridden and each client method instantiated, so a wrong signature fails here.
#include <string>

#include "shapes/drawing.cellshm.hpp"

namespace {

class Drawer : public shapes::v1::DrawingServicer {
  public:
    google::protobuf::Empty draw(const shapes::v1::Figure &request) override {
        (void)request;
        return google::protobuf::Empty();
    }
    shapes::common::Point type(const shapes::v1::Figure_Segment &request) override { return request.to(); }
    void match(cellshm::typed::ServerStream<shapes::v1::Figure, shapes::v1::Figure_Segment> &stream) override {
        while (auto figure = stream.next())
            for (const auto &segment : figure->segments()) stream.send(segment);
    }
    void loop(const google::protobuf::Empty &request,
              cellshm::typed::ServerStream<cellshm::typed::Nothing, google::protobuf::Timestamp> &stream) override {
        (void)request;
        stream.send(google::protobuf::Timestamp());
    }
};

class Nothing : public shapes::v1::EmptyServicer {};

} // namespace

// Every client method, instantiated.
template class shapes::v1::DrawingClient<cellshm::Peer>;
template class cellshm::typed::TypedPublisher<shapes::v1::Figure>;
template class cellshm::typed::TypedSubscriber<shapes::v1::Figure>;
template class shapes::v1::EmptyClient<cellshm::Peer>;

void register_them(cellshm::Hub &hub);
void register_them(cellshm::Hub &hub) {
    static Drawer drawer;
    static Nothing nothing;
    shapes::v1::serve_drawing(hub, drawer);
    shapes::v1::serve_empty(hub, nothing);
}
