//! EC2 and STS answer in XML: a small tree of elements (local names, text,
//! children) is all kiln reads from them.

use quick_xml::events::Event;

/// One element: its local name (without a namespace prefix), its text and
/// its child elements, in document order.
#[derive(Debug, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }

    /// The children called `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |child| child.name == name)
    }

    /// The text of the element at `path` below this one.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        let mut element = self;
        for name in path {
            element = element.child(name)?;
        }
        Some(element.text.trim())
    }

    /// The `item`s of the list child `name` (EC2's `fooSet` lists).
    pub fn items<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.child(name)
            .into_iter()
            .flat_map(|list| list.children("item"))
    }
}

/// Parses a document into its root element; `None` if it is not XML.
pub fn parse(text: &str) -> Option<Element> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut open: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().ok()?;
        match event {
            Event::Start(start) => open.push(Element {
                name: start.local_name().into_inner().to_owned(),
                ..Element::default()
            }),
            Event::Empty(empty) => {
                let element = Element {
                    name: empty.local_name().into_inner().to_owned(),
                    ..Element::default()
                };
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = open.pop()?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(element) = open.last_mut() {
                    element.text.push_str(&data.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                let element = open.last_mut()?;
                if let Some(character) = reference.resolve_char_ref().ok()? {
                    element.text.push(character);
                } else {
                    let name = reference.xml10_content();
                    element
                        .text
                        .push_str(quick_xml::escape::resolve_xml_entity(&name)?);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if open.is_empty() { root } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ec2_lists_entities_and_cdata_and_refuses_broken_documents() {
        let document = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <imagesSet>
    <item><imageId>ami-1</imageId><name>web &amp; db &#65;</name><tagSet/></item>
    <item><imageId>ami-2</imageId><description><![CDATA[a <b>]]></description></item>
  </imagesSet>
</DescribeImagesResponse>"#;
        let root = parse(document).unwrap();
        assert_eq!(root.name, "DescribeImagesResponse");
        let items: Vec<&Element> = root.items("imagesSet").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text_at(&["name"]), Some("web & db A"));
        assert_eq!(items[1].text_at(&["description"]), Some("a <b>"));
        assert_eq!(items[0].items("tagSet").count(), 0);
        assert_eq!(parse("<a><b></a>"), None);
        assert_eq!(parse("<a>"), None);
        assert_eq!(parse("<a>&bogus;</a>"), None);
    }
}
